"""The conversation engine: from a user's text (and the tenant's memory and history) to the bot's answer.

It runs inside the caller's transaction on the tenant database: tool writes (saved events, reminders) commit
together with the reply, or not at all, so a crash mid-turn leaves nothing half done and the redelivered turn
starts clean. (Side effects of a tenant's HTTP and MCP tools on other systems cannot be rolled back.)

A tool call waiting for the user's yes is settled first, before any model call (shared.tools.confirmation): a yes
runs it and the model reports the result; "no" or a late yes gets our own answer; anything else cancels it and
the message is answered as usual.

A read the intent rules are sure of ("what do I have scheduled this week?", "what reminders do I have?") runs
before the first model call and its result goes into the turn's context (shared.conversation.prefetch): the model
answers in one call instead of two, and the prefetched call is in the turn's `tools_used` like a model's.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Sequence

import psycopg

from shared.agents.base import AgentRequest, AgentResponse, Intent, LLMCall, Route
from shared.agents.intent import classify, http_keywords
from shared.agents.registry import orchestrator_for
from shared.conversation import prefetch, summaries
from shared.conversation.prompt import Knowledge, Prompt, build_prompt
from shared.llm.base import LLMError, LLMProvider
from shared.config.tenants import Tenant
from shared.conversation.tokens import counter_for, prompt_budget
from shared.tools import confirmation
from shared.tools.base import ToolContext

if TYPE_CHECKING:  # pragma: no cover
    from shared.knowledge.store import KnowledgeHit, KnowledgeStore
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
    passages: list[dict[str, Any]] = field(default_factory=list)  # the knowledge passages the prompt carried


def _memory_line(hit: Any, tenant: Tenant) -> str:
    text = hit.title or hit.content
    if hit.title and hit.content and hit.content != hit.title:
        text = f"{hit.title}: {hit.content}"
    if getattr(hit, "starts_at", None):
        text += f" ({hit.starts_at.astimezone(tenant.config.tz):%a %Y-%m-%d %H:%M})"
    return text[:300]


TURN_DEADLINE_SECONDS = 120  # no new tool step after this; the final answer still comes
SEARCH_KNOWLEDGE = "search_knowledge"


def _knowledge(tenant: Tenant, conn: psycopg.Connection, store: "KnowledgeStore | None",
               text: str) -> tuple[list["KnowledgeHit"] | None, bool]:
    """Whether the tenant has documents, and the relevant passages for this message (best first, at most
    `config.knowledge_passages`; None when not searched: no documents, `knowledge_passages: 0`, or the search
    failed). A failure costs the passages, not the answer."""
    cfg = tenant.config
    if store is None:
        return None, False
    try:
        with conn.transaction():  # a savepoint: a failed search leaves the turn's transaction usable
            if not store.has_documents(conn):
                return None, False
            if cfg.knowledge_passages == 0:
                return None, True
            found = store.search(conn, text, limit=min(2 * cfg.knowledge_passages, 20))
        return found.relevant(cfg.knowledge_min_similarity, cfg.knowledge_min_coverage)[:cfg.knowledge_passages], \
            True
    except Exception:  # an aid: a failing search must not cost the user an answer
        log.exception("knowledge search failed")
        return None, False


def _passage_record(hit: "KnowledgeHit") -> dict[str, Any]:
    return {"chunk_id": hit.chunk_id, "source": hit.source, "citation": hit.citation(),
            "similarity": None if hit.similarity is None else round(hit.similarity, 3),
            "coverage": round(hit.coverage, 2)}


def _keywords(registry: "ToolRegistry", group: str) -> set[str]:
    tools = [registry.get(n) for n in registry.names(group=group)]
    return http_keywords((t.name, t.description) for t in tools if t is not None)


CONFIRMATION = Intent("confirmation", "rules")


def _answer_confirmed(orchestrator: Any, request: AgentRequest,
                      resolution: "confirmation.Resolution") -> AgentResponse:
    """The user said yes and the action ran: the model reports the result, no tools offered (the action is done;
    a model that fails here cannot cost the user the news: our own words then)."""
    request.messages = [*request.messages, *resolution.replay()]
    try:
        response = orchestrator.handle(request, Route(None, ()))
    except LLMError:
        log.warning("model failed after a confirmed action; the user is told what was done", exc_info=True)
        response = AgentResponse(text="", agent="confirmation", calls=request.calls)
    response.text = response.text or confirmation.done_reply(resolution)
    response.tools_used = [resolution.action["tool"], *response.tools_used]
    return response


def _memories(tenant: Tenant, conn: psycopg.Connection, memory: "MemoryStore | None", user_id: int, text: str,
              small_talk: bool) -> list[str]:
    """The user's memories relevant to the message; small talk gets only those above
    `smalltalk_memory_min_score` (usually none: "thanks" needs no facts)."""
    if not tenant.config.rag_enabled or memory is None:
        return []
    floor = tenant.config.smalltalk_memory_min_score if small_talk else None
    try:
        return [_memory_line(h, tenant) for h in memory.relevant_for_prompt(conn, user_id, text, min_score=floor)]
    except Exception:  # retrieval is an aid; a failure must not cost the user an answer
        log.exception("memory retrieval failed")
        return []


def _build(tenant: Tenant, conn: psycopg.Connection, registry: "ToolRegistry", memory: "MemoryStore | None",
           user_id: int, text: str, history: Sequence[dict[str, Any]], now: datetime, intent: Intent, route: Route,
           hits: list["KnowledgeHit"] | None, publish: Callable[..., Any] | None,
           prefetched: Sequence[prefetch.Prefetched] = ()) -> Prompt:
    """The turn's prompt (layout: shared/conversation/prompt.py). Small talk (gated, no tools offered): short
    system prompt, short window. The history budget is the tenant's own, apart from the tool schemas; the whole
    still fits `max_context_tokens` with them. Asks for a summary update when history outgrew its budget."""
    cfg = tenant.config
    small_talk = cfg.tool_gating and intent.name == "smalltalk" and not route.offered
    summary = summaries.read(conn, tenant, user_id)
    rows = summaries.after(history, summary)
    if not small_talk:
        summaries.request_if_due(conn, tenant, user_id, rows, now, publish)
    # Small talk gets passages only when relevant, never the "say you don't know" line.
    searched = hits is not None and intent.name != "smalltalk"
    hits = hits or []
    return build_prompt(tenant, now, rows, text, _memories(tenant, conn, memory, user_id, text, small_talk),
                        budget=_budget(tenant, registry, route),
                        knowledge=Knowledge(tuple((h.citation(), h.text) for h in hits), searched),
                        summary=summary.text,
                        history_budget=cfg.smalltalk_history_tokens if small_talk else cfg.history_budget_tokens,
                        small_talk=small_talk, prefetched=[(p.tool, p.arguments, p.content) for p in prefetched],
                        count=counter_for(tenant.llm.model_chat))


def _budget(tenant: Tenant, registry: "ToolRegistry", route: Route) -> int:
    """Tokens for the messages once the offered tool schemas are counted, by the model's own tokeniser."""
    return prompt_budget(tenant.config.max_context_tokens, registry.openai_schemas(route.offered),
                         counter_for(tenant.llm.model_chat))


def _prefetch(ctx: ToolContext, registry: "ToolRegistry", text: str, intent: Intent, route: Route,
              now: datetime) -> list[prefetch.Prefetched]:
    """The reads the rules are sure of, run before the first model call (shared.conversation.prefetch); their
    results together within half the prompt's budget (about 4 characters a token), each within a tool result's
    cap. They cost fewer tokens than the second model call they save, which would re-send the whole prompt."""
    reads = prefetch.plan(ctx, registry, text, intent, route.offered, now)
    if not reads:
        return []
    done = prefetch.run(ctx, registry, reads, limit=2 * _budget(ctx.tenant, registry, route) // len(reads))
    log.info("reads prefetched", extra={"tools": [p.tool for p in done],
                                        "errors": sum(1 for p in done if p.is_error)})
    return done


def respond(*, tenant: Tenant, conn: psycopg.Connection, llm: LLMProvider, registry: "ToolRegistry",
            memory: "MemoryStore", user_id: int, phone: str, text: str, history: Sequence[dict[str, Any]],
            now: datetime, clock: Callable[[], datetime], request_id: str | None,
            calls: list[LLMCall] | None = None, knowledge: "KnowledgeStore | None" = None,
            publish: Callable[..., Any] | None = None) -> EngineReply:
    """`calls` (the caller's list) receives every model call as it is made, so the caller can account for the
    tokens even when the turn fails half way; the answering calls name the knowledge passages their prompt
    carried (`LLMCall.passages`, recorded in llm_usage). `publish` (the turn transaction's
    `publish_after_commit`) lets the turn ask for a summary update; without it none is asked for."""
    calls = [] if calls is None else calls
    started = time.monotonic()
    ctx = ToolContext(tenant=tenant, conn=conn, user_id=user_id, user_phone=phone, memory=memory, clock=clock,
                      request_id=request_id, knowledge=knowledge)
    settled = confirmation.resolve(ctx, registry, text)
    if settled is not None and settled.reply is not None:  # "no", or a yes too late: our words, no model call
        return EngineReply(settled.reply, CONFIRMATION, AgentResponse(settled.reply, "confirmation"), calls)
    confirmed = settled is not None and settled.outcome == "confirmed"
    intent = CONFIRMATION if confirmed else classify(
        text, _keywords(registry, "http"), llm, calls, max_tokens=tenant.config.max_context_tokens,
        mcp_words=_keywords(registry, "mcp"))
    orchestrator = orchestrator_for(tenant)
    hits, has_documents = _knowledge(tenant, conn, knowledge, text)
    # search_knowledge is offered only to tenants with documents: a tool that can find nothing costs tokens
    route = Route(None, ()) if confirmed else orchestrator.route(
        intent.name, registry, tenant.config.tool_gating, hidden=() if has_documents else (SEARCH_KNOWLEDGE,))
    prefetched = [] if confirmed else _prefetch(ctx, registry, text, intent, route, now)
    prompt = _build(tenant, conn, registry, memory, user_id, text, history, now, intent, route, hits, publish,
                    prefetched)
    passages = [_passage_record(h) for h in (hits or [])[:prompt.passages_used]]
    if passages:
        log.info("knowledge passages in the prompt", extra={"passages": passages})

    request = AgentRequest(tenant=tenant, text=text, messages=prompt.messages, intent=intent, llm=llm,
                           registry=registry, tool_ctx=ctx, max_steps=tenant.config.max_tool_steps, calls=calls,
                           deadline=started + TURN_DEADLINE_SECONDS)
    first_answering_call = len(calls)
    response = _answer_confirmed(orchestrator, request, settled) if confirmed else orchestrator.handle(request, route)
    response.tools_used = [p.tool for p in prefetched] + response.tools_used  # logged like the model's calls
    ids = tuple(p["chunk_id"] for p in passages)
    for i in range(first_answering_call, len(calls)):
        calls[i] = dataclasses.replace(calls[i], passages=ids)
    return EngineReply(response.text, intent, response, calls, prompt.tokens, prompt.history_used,
                       prompt.memories_used, passages)
