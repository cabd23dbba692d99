"""Inbound messages and turns. The tenant database is the source of truth for message state
(`received` -> `answered` | `ignored` | `rate_limited` | `held` | `opted_out` | `failed`); Redis only carries the work.

Guarantees, step by step:
- `store_inbound`: each Infobip messageId is stored exactly once (unique index), whatever the redeliveries.
- `run_user_turn`: one turn at a time per (tenant, user), across every process and host: the turn holds a
  per-user advisory lock for its transaction (a second turn finds it taken and is retried later). A turn takes
  *all* of the user's `received` messages, oldest first, once the newest is older than the debounce window,
  so a burst is answered once, in order. Before any LLM call, shared.handoff.gate routes them: stop/start keywords,
  a request for a person, a conversation a person handles (`held`) or an opted-out user (see shared/handoff/).
  Tool writes, usage rows, the reply, its outbox rows and the
  `answered` marks commit together: a crash before the commit leaves the messages `received`, and the
  redelivered (or recovered) turn answers them exactly once.
- sends (and the turn task) are registered on the unit of work's transaction and published only after its commit
  (shared/db/unit_of_work.py).
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

from shared.clock import utcnow
from shared.db import messages, users
from shared.db.unit_of_work import Transaction, UnitOfWork
from shared.db.usage import budget_spent, record_usage
from shared.delivery.outbox import client_for_user, queue_reply
from shared.queueing.tasks import TASK_RUN_TURN
from shared.conversation.engine import respond
from shared.delivery.infobip.times import parse_infobip_time
from shared.agents.base import LLMCall
from shared.llm.base import LLMProvider
from shared.conversation.media import transcribe_voice
from shared.conversation.message_text import message_text
from shared.conversation.ratelimit import NOTICE
from shared.handoff.gate import route
from shared.handoff.state import take_over
from shared.phone import normalize_number
from shared.privacy import requests as privacy_requests
from shared.config.tenants import Tenant

log = logging.getLogger(__name__)

DEFAULT_UNREADABLE = "Sorry, I can't read this kind of message yet. Could you write it as text?"
DEFAULT_BUDGET_SPENT = "We're getting a lot of messages today, so I can't answer right now. Please try again later."
HISTORY_ROWS = 200  # read at most this many; the token budget decides how many are sent


@dataclass
class TurnDeps:
    """What turns need, built once per worker process and passed in."""

    llm_for: Callable[[Tenant, Any], LLMProvider]      # (tenant, connection) -> provider
    registry_for: Callable[[Tenant], Any]              # tenant -> ToolRegistry
    memory_for: Callable[[Tenant], Any]                # tenant -> MemoryStore
    infobip_for: Callable[[Tenant], Any] | None = None # tenant -> InfobipClient (mark as read, typing)
    knowledge_for: Callable[[Tenant], Any] | None = None  # tenant -> KnowledgeStore (None: no business documents)
    limiter: Any = None                                # shared.conversation.ratelimit.RateLimiter
    clock: Callable[[], datetime] = utcnow
    # Runs work the turn need not wait for (blue ticks, typing): a thread pool in workers, inline by default.
    background: Callable[[Callable[[], None]], Any] = lambda work: work()


@dataclass
class Stored:
    user_id: int
    message_row: int
    phone: str
    status: str                  # the message's status now: received | answered | rate_limited | ...
    duplicate: bool


def _rate_verdict(tenant: Tenant, deps: TurnDeps, phone: str):
    """The rate limiter's verdict, or None (let the message through) when there is none or Redis fails: a
    limiter outage must not lose messages."""
    if deps.limiter is None:
        return None
    try:
        return deps.limiter.check(tenant, phone)
    except Exception as exc:
        log.warning("rate limiter unavailable: message let through", extra={"error_type": exc.__class__.__name__})
        return None


def store_inbound(tenant: Tenant, deps: TurnDeps, uow: UnitOfWork, result: dict, request_id: str | None) -> Stored:
    """Commit the inbound message once per messageId; a flooding user's messages are stored as `rate_limited`.
    A message still `received` (new, or a redelivery before its turn) gets its user's turn after the debounce
    window: a tracked task (a lost turn task is re-driven, not waited out), published after the commit."""
    with uow.transaction(tenant) as tx:
        stored = _store(tx, deps, result, request_id)
        if stored.status == "received":
            tx.publish_after_commit(TASK_RUN_TURN, {"tenant_id": tenant.tenant_id, "user_id": stored.user_id,
                                                    "request_id": request_id},
                                    countdown=tenant.config.debounce_ms / 1000, tracked=True)
    return stored


def _store(tx: Transaction, deps: TurnDeps, result: dict, request_id: str | None) -> Stored:
    conn, tenant = tx.conn, tx.tenant
    message = result.get("message") or {}
    phone = normalize_number(result["from"])
    # Infobip's time, but never in our future: a user's "last message" must not keep the 24-hour window open.
    received_at = min(parse_infobip_time(result.get("receivedAt")) or deps.clock(), deps.clock())
    existing = messages.get_by_infobip_id(conn, result["messageId"])
    if existing is not None:
        return Stored(existing["user_id"], existing["id"], phone, existing["status"], True)
    verdict = _rate_verdict(tenant, deps, phone)
    status = "received" if verdict is None or verdict.allowed else "rate_limited"
    user_id = users.upsert_user(conn, phone, (result.get("contact") or {}).get("name"), received_at)
    row = messages.insert_inbound(conn, user_id=user_id, infobip_message_id=result["messageId"],
                                  message_type=str(message.get("type") or "UNKNOWN").upper(),
                                  body=message_text(message), payload=message, received_at=received_at,
                                  request_id=request_id, status=status)
    if row is None:  # a concurrent delivery stored it first
        existing = messages.get_by_infobip_id(conn, result["messageId"])
        return Stored(user_id, existing["id"], phone, existing["status"], True)
    if verdict is not None and verdict.notify:
        text = tenant.config.rate_limit_notice or NOTICE
        queue_reply(tx, user_id=user_id, phone=phone, text=text, source_message=None, request_id=request_id,
                    now=deps.clock(), last_inbound_at=users.last_inbound_at(conn, user_id))
        log.warning("rate limit reached: message stored, not answered", extra={"scope": verdict.scope})
    return Stored(user_id, row, phone, status, False)


@dataclass
class TurnOutcome:
    answered: list[int] = field(default_factory=list)   # message rows answered by this turn
    retry_in_ms: int | None = None                      # busy or too early: run again after this long
    reason: str = ""


ACK_WAIT_SECONDS = 5.0  # at most this long before the reply, for the blue ticks to be sent first


def _acknowledge(tenant: Tenant, deps: TurnDeps, user: dict, pending: list[dict]) -> Any:
    """Blue ticks and a typing indicator while the turn runs: optional per tenant, failures harmless. Sent in the
    background, at the same time as the model works; the turn waits for them (`_acknowledged`) only before its
    reply is queued, so the user never sees the answer before the ticks. Returns what `deps.background` gave.
    A playground user's client is the PlaygroundClient (shared.delivery.outbox.client_for_user): no HTTP call."""
    client = deps.infobip_for(tenant) if deps.infobip_for else None
    client, phone = client_for_user(client, bool(user.get("playground"))) if client else None, user["phone"]
    if client is None or not (tenant.config.mark_read or tenant.config.typing_indicator):
        return None
    message_ids = [m["infobip_message_id"] for m in pending] if tenant.config.mark_read else []

    def send() -> None:
        try:
            for message_id in message_ids:
                client.mark_read(tenant.waba_number, message_id)
            if tenant.config.typing_indicator:
                client.typing(tenant.waba_number, phone)
        except Exception:  # the clients never raise by contract; belt and braces, it must not cost the turn
            log.warning("mark-as-read / typing failed", exc_info=True)

    return deps.background(send)


def _acknowledged(pending_ack: Any) -> None:
    """Wait (bounded) for the blue ticks sent in the background; a slow or failed one does not hold the reply."""
    if isinstance(pending_ack, Future):
        try:
            pending_ack.result(timeout=ACK_WAIT_SECONDS)
        except Exception:  # a timeout: the reply goes anyway (the ticks may follow it)
            log.warning("mark-as-read / typing still running; replying anyway")


def _transcribe(conn, tenant: Tenant, deps: TurnDeps, llm: LLMProvider, rows: list[dict], calls: list) -> None:
    """Voice notes become text where the tenant's provider transcribes audio (OpenAI); the text is stored so
    history and redeliveries see it. Elsewhere they stay unreadable and get the polite answer."""
    if not getattr(llm, "supports_transcription", False) or deps.infobip_for is None:
        return
    for m in rows:
        if m["body"] is None and m["message_type"] in ("VOICE", "AUDIO"):
            started = time.monotonic()
            text = transcribe_voice(tenant, deps.infobip_for(tenant), llm, m["payload"] or {})
            calls.append(LLMCall(llm.name, getattr(llm, "transcription_model", "whisper-1"), 0, 0,
                                 int((time.monotonic() - started) * 1000), (), "transcription",
                                 getattr(llm, "entry", "")))
            if text:
                m["body"] = f"[voice note] {text}"
                messages.set_body(conn, m["id"], m["body"])


SAID_AT_MAX_LAG = timedelta(hours=6)  # older than this (an outage), the words are read at the turn's own time


def said_at(received_at: datetime | None, now: datetime) -> datetime:
    """When the user wrote the newest message of the turn: the moment "tomorrow" and "in 2 hours" are read from.
    A message written at 23:59:58 and answered at 00:00:03 still means the day after the day it was written.
    Infobip's `receivedAt` is trusted within bounds: never later than now, never more than SAID_AT_MAX_LAG old."""
    if received_at is None or received_at > now or now - received_at > SAID_AT_MAX_LAG:
        return now
    return received_at


def clock_from(start: datetime, clock: Callable[[], datetime]) -> Callable[[], datetime]:
    """A clock that reads `start` now and runs at the pace of `clock`: the turn's tools see the same "now" as the
    prompt, so "this week" and a due time's "not in the past" agree with what the model was told."""
    offset = clock() - start
    return lambda: clock() - offset


def _write_usage(conn, user_id: int, request_id: str | None, calls: list) -> None:
    for call in calls:
        record_usage(conn, user_id=user_id, request_id=request_id, provider=call.provider, model=call.model,
                     prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
                     latency_ms=call.latency_ms, tools_used=list(call.tools_used), provider_entry=call.entry or None,
                     knowledge_chunks=list(call.passages), cached_prompt_tokens=call.cached_prompt_tokens)


def _record_usage(tenant: Tenant, uow: UnitOfWork, user_id: int, request_id: str | None, calls: list) -> None:
    """Usage of a turn that failed, in a transaction of its own after the turn's rolled back: tokens spent by a
    turn that will be retried still count, for the record and for the daily budget. (A turn that answers writes
    its usage in its own transaction: one commit less.)"""
    if not calls:
        return
    try:
        with uow.transaction(tenant) as tx:
            _write_usage(tx.conn, user_id, request_id, calls)
    except Exception:
        log.exception("usage not recorded", extra={"calls": len(calls)})


def run_user_turn(tenant: Tenant, deps: TurnDeps, uow: UnitOfWork, user_id: int,
                  request_id: str | None) -> TurnOutcome:
    """The user's turn; its reply's sends are registered on `uow` and go out after the turn's commit."""
    calls: list = []
    try:
        return _run_user_turn(tenant, deps, uow, user_id, request_id, calls)
    finally:
        _record_usage(tenant, uow, user_id, request_id, calls)


def _compose_reply(conn, tenant: Tenant, deps: TurnDeps, llm: LLMProvider, user_id: int, phone: str, rows: list[dict],
                   *, now: datetime, spoken: datetime, request_id: str | None,
                   calls: list, publish: Callable[..., Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The turn's answer and its log summary: the polite texts when nothing is readable or the day's budget is
    spent (no model call), otherwise the engine's answer read at the moment the user wrote (`spoken`)."""
    texts = [m["body"] for m in rows if m["body"]]
    summary: dict[str, Any] = {"tools_used": [], "token_usage": {"total": 0}, "messages": len(rows)}
    if not texts:
        return tenant.config.unreadable_message_reply or DEFAULT_UNREADABLE, summary
    if budget_spent(conn, tenant, now):
        log.warning("daily token budget spent: answered without the LLM")
        return tenant.config.budget_exhausted_reply or DEFAULT_BUDGET_SPENT, summary
    history = messages.recent_history(conn, user_id, HISTORY_ROWS, before_id=rows[0]["id"])
    answer = respond(tenant=tenant, conn=conn, llm=llm, registry=deps.registry_for(tenant),
                     memory=deps.memory_for(tenant), user_id=user_id, phone=phone, text="\n".join(texts),
                     history=history, now=spoken, clock=clock_from(spoken, deps.clock), request_id=request_id,
                     calls=calls, knowledge=deps.knowledge_for(tenant) if deps.knowledge_for else None,
                     publish=publish)  # a summary update, published after the turn commits
    prompt = sum(c.prompt_tokens for c in answer.calls)
    completion = sum(c.completion_tokens for c in answer.calls)
    summary.update({"tools_used": answer.response.tools_used, "intent": answer.intent.name,
                    "agent": answer.response.agent, "llm_calls": len(answer.calls),
                    "history_used": answer.history_used, "memories_used": answer.memories_used,
                    "passages": [p["citation"] for p in answer.passages],
                    "token_usage": {"prompt": prompt, "completion": completion, "total": prompt + completion}})
    return answer.text, summary


def _for_the_model(tx: Transaction, deps: TurnDeps, user: dict, pending: list[dict],
                   request_id: str | None) -> "list[dict] | TurnOutcome":
    """The messages the model is to answer, or the outcome when none is: reactions (stored, no turn), stop/start
    keywords, a request for a person or a person handling the conversation (shared.handoff), a request to erase
    the user's data (shared.privacy). All of it is decided before any model call."""
    rows = [m for m in pending if m["message_type"] != "REACTION"]
    for m in pending:
        if m["message_type"] == "REACTION":
            messages.set_status(tx.conn, m["id"], "ignored")
    if not rows:
        return TurnOutcome(reason="reactions only")
    routed = route(tx, user, rows, deps.clock())
    if routed.switched and routed.for_bot:  # the switch (and its notice) commits first; the rest next turn
        return TurnOutcome(retry_in_ms=50, reason="conversation state switched")
    if not routed.for_bot:
        return TurnOutcome(reason=f"conversation {routed.state}")
    privacy = privacy_requests.handle_in_turn(tx, user, routed.for_bot, now=deps.clock(), request_id=request_id)
    if privacy is not None:  # "delete my data" asked or confirmed (the user may be gone now)
        return TurnOutcome(answered=privacy.answered, reason=privacy.reason)
    return routed.for_bot


def _run_user_turn(tenant: Tenant, deps: TurnDeps, uow: UnitOfWork, user_id: int, request_id: str | None,
                   calls: list) -> TurnOutcome:
    started = time.monotonic()
    with uow.transaction(tenant) as tx:
        conn = tx.conn
        # One turn at a time per user, across processes and hosts (a lock held until this transaction ends).
        if not messages.try_lock_turn(conn, user_id):
            return TurnOutcome(retry_in_ms=1000, reason="busy")  # this user's previous turn is still running
        user = users.get_user(conn, user_id)
        pending = messages.pending_for_turn(conn, user_id)
        if not pending:
            return TurnOutcome(reason="nothing pending")
        wait = tenant.config.debounce_ms - pending[-1]["age_ms"]
        if wait > 0:
            return TurnOutcome(retry_in_ms=int(wait) + 50, reason="debounce")
        phone = user["phone"]
        rows = _for_the_model(tx, deps, user, pending, request_id)
        if isinstance(rows, TurnOutcome):
            return rows
        pending_ack = _acknowledge(tenant, deps, user, rows)
        request_id = request_id or rows[-1]["request_id"]
        now = deps.clock()
        spoken = said_at(rows[-1]["received_at"], now)
        llm = deps.llm_for(tenant, conn)
        _transcribe(conn, tenant, deps, llm, rows, calls)
        reply, summary = _compose_reply(conn, tenant, deps, llm, user_id, phone, rows, now=now, spoken=spoken,
                                        request_id=request_id, calls=calls, publish=tx.publish_after_commit)
        _acknowledged(pending_ack)
        # the reply with what its turn did (`meta`: the Playground shows it), its outbox rows and the `answered`
        # marks commit together below: exactly-once reply
        reply_id = messages.insert_assistant_message(conn, user_id=user_id, body=reply, reply_to=rows[-1]["id"],
                                                     request_id=request_id, meta=summary)
        queue_reply(tx, user_id=user_id, phone=phone, text=reply, source_message=reply_id, request_id=request_id,
                    now=now, last_inbound_at=users.last_inbound_at(conn, user_id))
        answered = [m["id"] for m in rows]
        messages.mark_answered(conn, answered)
        users.reset_failures(conn, user_id)  # the bot answered: failures in a row count from zero again
        _write_usage(conn, user_id, request_id, calls)
        recorded = len(calls)
    del calls[:recorded]  # committed with the turn; only what a failure leaves is written apart

    log.info("message processed successfully", extra={"duration": f"{time.monotonic() - started:.3f}s",
                                                       "user_id": phone, **summary})
    return TurnOutcome(answered=answered)


FAILURES_BEFORE_HANDOFF = 2  # turns given up in a row for one user before a person takes the conversation over
DEFAULT_APOLOGY = "Sorry, something went wrong on my side and I couldn't answer that. Please try again in a moment."


def give_up(tenant: Tenant, deps: TurnDeps, uow: UnitOfWork, user_id: int, request_id: str | None) -> None:
    """After a turn failed for good: mark the user's waiting messages `failed` and queue an apology (sent after the
    commit), so the user is not left without an answer and the recovery sweep does not retry a turn that cannot
    succeed. The second failure in a row hands the conversation to a person (shared.handoff)."""
    with uow.transaction(tenant) as tx:
        conn = tx.conn
        # wait for a turn of this user that may still be running, then take over its messages
        messages.wait_for_turn_lock(conn, user_id)
        user = users.get_user(conn, user_id)
        failed = messages.fail_received(conn, user_id)
        if user is None or not failed:
            return
        log.error("turn failed for good: user told, messages marked failed", extra={"messages": len(failed)})
        _apologise(tx, deps, user, failed[-1], request_id)
        if users.count_failure(conn, user_id) >= FAILURES_BEFORE_HANDOFF:
            take_over(tx, user_id, by="bot", reason=f"the bot failed {FAILURES_BEFORE_HANDOFF} times in a row")


def _apologise(tx: Transaction, deps: TurnDeps, user: dict, reply_to: int, request_id: str | None) -> None:
    """Store and queue the tenant's apology to `user` (a row with id, phone, last_inbound_at)."""
    tenant = tx.tenant
    text = tenant.config.failure_reply or DEFAULT_APOLOGY
    reply_id = messages.insert_assistant_message(tx.conn, user_id=user["id"], body=text, reply_to=reply_to,
                                                 request_id=request_id)
    queue_reply(tx, user_id=user["id"], phone=user["phone"], text=text, source_message=reply_id,
                request_id=request_id, now=deps.clock(), last_inbound_at=user["last_inbound_at"])


def _printable(value: object) -> str:
    """A string Postgres can store: no NUL, no lone surrogates."""
    return str(value).replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def store_unstorable(tenant: Tenant, deps: TurnDeps, uow: UnitOfWork, result: dict, request_id: str | None) -> None:
    """The last resort for a message whose content cannot be stored (the ingress should have refused it): keep a
    `failed` placeholder without the content, so the messageId is known, and queue the apology (sent after the
    commit), so the user is not left in silence. Raises when even that is impossible (no phone number to
    answer)."""
    phone = normalize_number(_printable(result["from"]))
    message_type = _printable((result.get("message") or {}).get("type") or "UNKNOWN")[:64].upper()
    with uow.transaction(tenant) as tx:
        conn = tx.conn
        user_id = users.upsert_user(conn, phone, None, deps.clock())
        row = messages.insert_inbound(conn, user_id=user_id, infobip_message_id=_printable(result["messageId"]),
                                      message_type=message_type, body=None, payload={"unstorable": True},
                                      received_at=deps.clock(), request_id=request_id, status="failed")
        if row is None:  # stored before: answered before
            return
        _apologise(tx, deps, users.get_user(conn, user_id), row, request_id)

