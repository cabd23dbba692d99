"""Rolling per-user summaries of the conversation that no longer fits the prompt (issue 17).

The prompt carries the summary, then only the messages after the message it `covers_to` (shared/conversation/
prompt.py). When those messages outgrow the history budget, the turn asks for an update (`request_if_due`, in the
turn's transaction; the task is published after the turn commits), and a task on the `summaries` queue
(`update_summary`, workers/summaries.py) folds the older of them into the summary, leaving about half the budget
of recent messages. The reply never waits for it: until the summary moves, the prompt's history window drops the
oldest messages as before.

Guarantees:
- the task is at-least-once and idempotent: it reads `covers_to`, summarises only messages after it, and writes
  only if `covers_to` is still what it read (`shared.db.summaries.advance`); a redelivered or concurrent copy
  finds nothing new to fold, or loses the race and writes nothing;
- it holds no database connection while the model writes (read, call, then a short write transaction);
- incremental and bounded: each update is the previous summary plus the newly folded messages, clipped to the
  tenant's `summary_max_tokens`;
- erased with the user: the row goes with the user (forget_user, and ON DELETE CASCADE); a task that finishes
  after the erasure matches no row and writes nothing (its usage is kept without a user, as billing needs);
- a turn asks at most once per `REQUEST_EVERY`, so a lost task is asked for again by a later turn.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Sequence

import psycopg

from shared.config.tenants import Tenant
from shared.conversation.prompt import history_window
from shared.conversation.tokens import clip_text, estimate_message, estimate_text
from shared.db import summaries as db
from shared.db.unit_of_work import UnitOfWork
from shared.db.usage import record_usage
from shared.llm.base import LLMProvider, answered_by, answered_entry
from shared.queueing.tasks import TASK_UPDATE_SUMMARY

log = logging.getLogger(__name__)

REQUEST_EVERY = timedelta(minutes=5)
FOLD_ROWS = 400            # messages read per update at most
FOLD_INPUT_FACTOR = 4      # messages folded per update: at most this many history budgets of text
SUMMARY_PROMPT = (
    "You keep a running summary of a WhatsApp conversation between a user and a business's assistant, so the "
    "assistant can remember it later. Update the summary with the new messages. Keep what the user said about "
    "themselves, their plans, preferences and open questions; leave out greetings and small talk. At most "
    "{words} words, short lines starting with \"- \", no preamble.")


@dataclass(frozen=True)
class Summary:
    text: str = ""
    covers_to: int = 0


def enabled(tenant: Tenant) -> bool:
    return tenant.config.summary_max_tokens > 0


def read(conn: psycopg.Connection, tenant: Tenant, user_id: int) -> Summary:
    """The user's summary as the prompt carries it (empty when summaries are off or none was written)."""
    if not enabled(tenant):
        return Summary()
    row = db.get(conn, user_id)
    return Summary(row["summary"], row["covers_to"]) if row else Summary()


def after(history: Sequence[dict[str, Any]], summary: Summary) -> list[dict[str, Any]]:
    """The history rows the summary does not cover (rows without an id are kept)."""
    return [r for r in history if r.get("id") is None or r["id"] > summary.covers_to]


def _cost(rows: Sequence[dict[str, Any]], clip: int) -> int:
    return sum(estimate_message({"role": r["role"], "content": clip_text(r["body"] or "", clip)}) for r in rows)


def request_if_due(conn: psycopg.Connection, tenant: Tenant, user_id: int, rows: Sequence[dict[str, Any]],
                   now: datetime, publish: Callable[..., Any] | None) -> bool:
    """In the turn's transaction: when the messages after the summary no longer fit the history budget, mark the
    request and register the task to run after the commit (`publish`: the transaction's publish_after_commit).
    True when a task was registered."""
    if publish is None or not enabled(tenant):
        return False
    budget = tenant.config.history_budget_tokens
    if _cost(rows, tenant.config.max_context_tokens // 4) <= budget:
        return False
    if not db.request(conn, user_id, now, REQUEST_EVERY):
        return False  # asked recently: that task is pending (or is asked for again after REQUEST_EVERY)
    publish(TASK_UPDATE_SUMMARY, {"tenant_id": tenant.tenant_id, "user_id": user_id})
    return True


def transcript(rows: Sequence[dict[str, Any]], clip: int) -> str:
    names = {"user": "User", "assistant": "Assistant"}
    return "\n".join(f"{names.get(r['role'], r['role'].title())}: {clip_text(r['body'] or '', clip)}" for r in rows)


def summary_messages(previous: str, rows: Sequence[dict[str, Any]], max_tokens: int) -> list[dict[str, str]]:
    words = max(20, int(max_tokens * 0.7))
    body = (f"Summary so far:\n{previous or '(none)'}\n\nNew messages:\n"
            f"{transcript(rows, max(64, max_tokens))}")
    return [{"role": "system", "content": SUMMARY_PROMPT.format(words=words)}, {"role": "user", "content": body}]


def to_fold(tenant: Tenant, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The oldest rows to fold now: all but the newest that fit half the history budget (the window then starts
    at a user message), at most FOLD_INPUT_FACTOR budgets of text per update."""
    budget = tenant.config.history_budget_tokens
    clip = tenant.config.max_context_tokens // 4
    _, start = history_window(rows, budget // 2, clip)
    folded, used = [], 0
    for row in rows[:start]:
        used += _cost([row], clip)
        if folded and used > FOLD_INPUT_FACTOR * budget:
            break
        folded.append(row)
    return folded


def update_summary(tenant: Tenant, uow: UnitOfWork, llm_for: Callable[[Tenant, Any], LLMProvider], user_id: int,
                   now: datetime) -> str:
    """Fold the user's older messages into their summary (see the module's guarantees); returns what happened."""
    with uow.transaction(tenant) as tx:
        row = db.get(tx.conn, user_id)
        if row is None or not enabled(tenant):
            return "no summary requested"
        rows = db.messages_after(tx.conn, user_id, row["covers_to"], FOLD_ROWS)
        llm = llm_for(tenant, tx.conn)
    folded = to_fold(tenant, rows)
    if not folded:
        return "nothing to fold"
    started = time.monotonic()
    result = llm.chat(summary_messages(row["summary"], folded, tenant.config.summary_max_tokens))
    text = clip_text((result.content or "").strip(), tenant.config.summary_max_tokens)
    provider, model = answered_by(result, llm)
    with uow.transaction(tenant) as tx:
        moved = bool(text) and db.advance(tx.conn, user_id, read_covers_to=row["covers_to"], summary=text,
                                          covers_to=folded[-1]["id"], now=now)
        gone = not moved and db.get(tx.conn, user_id) is None
        record_usage(tx.conn, user_id=None if gone else user_id, request_id=None, provider=provider, model=model,
                     prompt_tokens=result.usage.prompt_tokens, completion_tokens=result.usage.completion_tokens,
                     latency_ms=int((time.monotonic() - started) * 1000), tools_used=[],
                     provider_entry=answered_entry(result, llm),
                     cached_prompt_tokens=getattr(result.usage, "cached_prompt_tokens", 0))
    log.info("conversation summary", extra={"user_id": user_id, "folded": len(folded), "moved": moved,
                                            "summary_tokens": estimate_text(text)})
    return "updated" if moved else "not updated (moved by another run, or the user is gone)"
