"""db_agent: the user's memory, items, events and reminders, in the tenant database."""
from __future__ import annotations

from shared.agents.base import AgentRequest, AgentResponse
from shared.agents.loop import run_tool_loop


class DbAgent:
    name = "db_agent"
    allowed_tenants = None

    def can_handle(self, intent: str) -> bool:
        return intent in ("db", "mixed")

    def tool_names(self, registry) -> list[str]:
        return registry.names(group="db")

    def handle(self, request: AgentRequest) -> AgentResponse:
        return run_tool_loop(request, self.name, self.tool_names(request.registry))
