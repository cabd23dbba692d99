"""The agent interface (the seed's, in Python): name, allowed_tenants, can_handle(intent), handle(request).

A specialised agent owns a set of tools and answers by running the tool loop with only those tools exposed to
the model; the orchestrator decides which agents see a turn (tool gating).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from shared.llm.base import LLMProvider
from shared.config.tenants import Tenant

if TYPE_CHECKING:  # pragma: no cover
    from shared.tools.base import ToolContext
    from shared.tools.registry import ToolRegistry

INTENTS = ("smalltalk", "db", "http", "mcp", "mixed", "unknown")


@dataclass(frozen=True)
class Intent:
    name: str            # one of INTENTS
    source: str          # rules | embedding | llm | default
    confidence: float = 1.0


@dataclass(frozen=True)
class LLMCall:
    """One model call, as `llm_usage` records it."""

    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    tools_used: tuple[str, ...] = ()
    purpose: str = "chat"
    entry: str = ""           # the configured provider entry that answered (primary, fallback, a row's name)
    passages: tuple[int, ...] = ()  # knowledge chunks the call's prompt carried (shared.conversation.engine)
    cached_prompt_tokens: int = 0   # of prompt_tokens, those served from the provider's prompt cache (billed less)


@dataclass
class AgentRequest:
    tenant: Tenant
    text: str
    messages: list[dict[str, Any]]       # the built prompt (system, memories, history, user)
    intent: Intent
    llm: LLMProvider
    registry: "ToolRegistry"
    tool_ctx: "ToolContext"
    max_steps: int = 6
    calls: list[LLMCall] = field(default_factory=list)  # every model call, appended as it happens (usage survives a
                                                        # failure later in the turn)
    deadline: float | None = None                       # time.monotonic() after which no more tool steps are taken
    offered: tuple[str, ...] | None = None              # the route's tools (None: the agent's own)


@dataclass
class AgentResponse:
    text: str
    agent: str
    tools_offered: list[str] = field(default_factory=list)
    tools_used: list[str] = field(default_factory=list)
    calls: list[LLMCall] = field(default_factory=list)
    steps: int = 0
    stopped_early: bool = False
    awaiting_confirmation: bool = False   # the answer is our question: a tool call waits for the user's yes


@dataclass(frozen=True)
class Route:
    """The orchestrator's one decision for a turn: who answers (None: its own loop) and the tools offered."""

    agent: "Agent | None"
    offered: tuple[str, ...]


class Agent(Protocol):
    name: str
    allowed_tenants: frozenset[str] | None   # None: every tenant may enable it

    def can_handle(self, intent: str) -> bool: ...

    def tool_names(self, registry: "ToolRegistry") -> list[str]: ...

    def handle(self, request: AgentRequest) -> AgentResponse: ...
