"""The conversation engine: from a user's text (and the tenant's memory and history) to the bot's answer.

It runs inside the caller's transaction on the tenant database: tool writes (saved events, reminders) commit
together with the reply, or not at all, so a crash mid-turn leaves nothing half done and the redelivered turn
starts clean. (Side effects of a tenant's HTTP tools on other systems cannot be rolled back.)
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Sequence

import psycopg

from shared.agents.base import AgentRequest, AgentResponse, Intent, LLMCall
from shared.agents.intent import classify, http_keywords
from shared.agents.registry import orchestrator_for
from shared.conversation.prompt import build_prompt
from shared.llm.base import LLMProvider
from shared.config.tenants import Tenant
from shared.conversation.tokens import prompt_budget
from shared.tools.base import ToolContext

if TYPE_CHECKING:  # pragma: no cover
    from shared.memory.store import MemoryStore
    from shared.tools.registry import ToolRegistry

log = logging.getLogger(__name__)


@dataclass
class EngineReply:
    text: str
    intent: Intent
    response: AgentResponse
    calls: list[LLMCall] = field(default_factory=list)   # every model call of the turn, intent included
    prompt_tokens_estimate: int = 0
    history_used: int = 0
    memories_used: int = 0


def _memory_line(hit: Any, tenant: Tenant) -> str:
    text = hit.title or hit.content
    if hit.title and hit.content and hit.content != hit.title:
        text = f"{hit.title}: {hit.content}"
    if getattr(hit, "starts_at", None):
        text += f" ({hit.starts_at.astimezone(tenant.config.tz):%a %Y-%m-%d %H:%M})"
    return text[:300]


TURN_DEADLINE_SECONDS = 120  # no new tool step after this; the final answer still comes


def respond(*, tenant: Tenant, conn: psycopg.Connection, llm: LLMProvider, registry: "ToolRegistry",
            memory: "MemoryStore", user_id: int, phone: str, text: str, history: Sequence[dict[str, Any]],
            now: datetime, clock: Callable[[], datetime], request_id: str | None,
            calls: list[LLMCall] | None = None) -> EngineReply:
    """`calls` (the caller's list) receives every model call as it is made, so the caller can account for the
    tokens even when the turn fails half way."""
    calls = [] if calls is None else calls
    started = time.monotonic()
    http_words = http_keywords((n, registry.get(n).description) for n in registry.names(group="http"))
    intent = classify(text, http_words, llm, calls, max_tokens=tenant.config.max_context_tokens)
    orchestrator = orchestrator_for(tenant)
    route = orchestrator.route(intent.name, registry, tenant.config.tool_gating)

    # The budget covers everything sent: the offered tool schemas come off it before history is added.
    budget = prompt_budget(tenant.config.max_context_tokens, registry.openai_schemas(route.offered))
    memories: list[str] = []
    if tenant.config.rag_enabled and memory is not None:
        try:
            memories = [_memory_line(h, tenant) for h in memory.relevant_for_prompt(conn, user_id, text)]
        except Exception:  # retrieval is an aid; a failure must not cost the user an answer
            log.exception("memory retrieval failed")
    prompt = build_prompt(tenant, now, history, text, memories, budget=budget)

    ctx = ToolContext(tenant=tenant, conn=conn, user_id=user_id, user_phone=phone, memory=memory, clock=clock,
                      request_id=request_id)
    request = AgentRequest(tenant=tenant, text=text, messages=prompt.messages, intent=intent, llm=llm,
                           registry=registry, tool_ctx=ctx, max_steps=tenant.config.max_tool_steps, calls=calls,
                           deadline=started + TURN_DEADLINE_SECONDS)
    response = orchestrator.handle(request, route)
    return EngineReply(response.text, intent, response, calls, prompt.tokens, prompt.history_used, len(memories))
