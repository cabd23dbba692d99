"""mcp_agent: the tools of the tenant's MCP servers (`mcp_servers:` in tenants.yaml, shared.tools.mcp). A tenant
with MCP servers gets it without listing it in `enabled_agents` (shared.agents.registry)."""
from __future__ import annotations

from shared.agents.loop import ToolGroupAgent


class McpAgent(ToolGroupAgent):
    name = "mcp_agent"
    group = "mcp"
    intents = frozenset({"mcp", "mixed"})
