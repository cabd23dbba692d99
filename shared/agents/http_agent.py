"""http_agent: the business's own HTTP APIs declared in tenants.yaml (`http_tools`)."""
from __future__ import annotations

from shared.agents.base import AgentRequest, AgentResponse
from shared.agents.loop import run_tool_loop


class HttpAgent:
    name = "http_agent"
    allowed_tenants = None

    def can_handle(self, intent: str) -> bool:
        return intent in ("http", "mixed")

    def tool_names(self, registry) -> list[str]:
        return registry.names(group="http")

    def handle(self, request: AgentRequest) -> AgentResponse:
        return run_tool_loop(request, self.name, self.tool_names(request.registry))
