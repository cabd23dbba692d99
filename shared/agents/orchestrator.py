"""The orchestrator: picks the agents that can handle the turn's intent and exposes only their tools.

- small talk: no tool schemas at all (the cheapest prompt);
- one specialised agent: that agent handles the turn with its own tools;
- several, or unsure: one loop with the union of the enabled agents' tools (never fail for lack of a tool).
`config.tool_gating: false` turns gating off (every enabled tool on every turn), for comparison.
Routing is decided once (`route`); `handle` carries that decision out, so the prompt budget and the loop see the
same tools.
"""
from __future__ import annotations

from typing import Sequence

from shared.agents.base import Agent, AgentRequest, AgentResponse, Route
from shared.agents.loop import run_tool_loop


class Orchestrator:
    name = "orchestrator"
    allowed_tenants = None

    def __init__(self, agents: Sequence[Agent]):
        self.agents = list(agents)

    def can_handle(self, intent: str) -> bool:
        return True

    def tool_names(self, registry) -> list[str]:
        return _union(self.agents, registry)

    def route(self, intent: str, registry, tool_gating: bool = True, hidden: Sequence[str] = ()) -> Route:
        """Which agent answers (None: the orchestrator's own loop) and the tools the model will be offered
        (never one of `hidden`: tools that cannot help this turn, such as a knowledge search with no documents)."""
        if not tool_gating:  # gating off: every tool, every turn
            return Route(None, _visible(self.tool_names(registry), hidden))
        if intent == "smalltalk":
            return Route(None, ())
        able = [a for a in self.agents if a.can_handle(intent)] if intent != "unknown" else []
        if len(able) == 1:
            return Route(able[0], _visible(able[0].tool_names(registry), hidden))
        return Route(None, _visible(_union(able or self.agents, registry), hidden))

    def handle(self, request: AgentRequest, route: Route) -> AgentResponse:
        """Carries out `route`: its agent (or the own loop) offers exactly `route.offered`."""
        if route.agent is not None:
            request.offered = route.offered
            return route.agent.handle(request)
        return run_tool_loop(request, self.name, list(route.offered))


def _visible(names: Sequence[str], hidden: Sequence[str]) -> tuple[str, ...]:
    return tuple(n for n in names if n not in hidden)


def _union(agents: Sequence[Agent], registry) -> list[str]:
    """The tool names of `agents`, each once, in the agents' order."""
    names: list[str] = []
    for agent in agents:
        names += [n for n in agent.tool_names(registry) if n not in names]
    return names
