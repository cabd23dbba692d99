"""The orchestrator: picks the agents that can handle the turn's intent and exposes only their tools.

- small talk: no tool schemas at all (the cheapest prompt);
- one specialised agent: that agent handles the turn with its own tools;
- several, or unsure: one loop with the union of the enabled agents' tools (never fail for lack of a tool).
`config.tool_gating: false` turns gating off (every enabled tool on every turn), for comparison.
"""
from __future__ import annotations

from typing import Sequence

from shared.agents.base import Agent, AgentRequest, AgentResponse
from shared.agents.loop import run_tool_loop


class Orchestrator:
    name = "orchestrator"
    allowed_tenants = None

    def __init__(self, agents: Sequence[Agent]):
        self.agents = list(agents)

    def can_handle(self, intent: str) -> bool:
        return True

    def tool_names(self, registry) -> list[str]:
        names: list[str] = []
        for agent in self.agents:
            names += [n for n in agent.tool_names(registry) if n not in names]
        return names

    def route(self, intent: str, registry, tool_gating: bool = True) -> tuple[Agent | None, list[str]]:
        """Which agent answers (None: the orchestrator's own loop) and the tools the model will be offered."""
        if not tool_gating:  # gating off: every tool, every turn
            return None, self.tool_names(registry)
        if intent == "smalltalk":
            return None, []
        able = [a for a in self.agents if a.can_handle(intent)] if intent != "unknown" else []
        if len(able) == 1:
            return able[0], able[0].tool_names(registry)
        if able:
            names: list[str] = []
            for agent in able:
                names += [n for n in agent.tool_names(registry) if n not in names]
            return None, names
        return None, self.tool_names(registry)

    def handle(self, request: AgentRequest) -> AgentResponse:
        agent, names = self.route(request.intent.name, request.registry,
                                  bool(request.tenant.config.extra.get("tool_gating", True)))
        if agent is not None:
            return agent.handle(request)
        return run_tool_loop(request, self.name, names)
