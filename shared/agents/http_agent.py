"""http_agent: the business's own HTTP APIs declared in tenants.yaml (`http_tools`)."""
from __future__ import annotations

from shared.agents.loop import ToolGroupAgent


class HttpAgent(ToolGroupAgent):
    name = "http_agent"
    group = "http"
    intents = frozenset({"http", "mixed"})
