"""The prompt of one turn: system prompt + retrieved memories + as much recent history as fits the budget.

Older turns are left out, never sent whole: after 500 messages a prompt costs what it cost after 20.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from shared.tenants import Tenant
from shared.tokens import estimate_message

MEMORY_HEADER = "What you know about this user (from earlier conversations):"


@dataclass(frozen=True)
class Prompt:
    messages: list[dict[str, Any]]
    history_used: int
    history_dropped: int
    tokens: int


def system_prompt(tenant: Tenant, now: datetime, memories: Sequence[str] = ()) -> str:
    local = now.astimezone(tenant.config.tz)
    text = (
        f"You are the WhatsApp assistant of {tenant.config.business_name}. "
        f"Now it is {local:%A %Y-%m-%d %H:%M} ({tenant.config.timezone}); "
        "give dates and times in that timezone. Answer briefly, in the user's language. "
        "Use the tools to save, find and list the user's items, events and reminders; never invent them."
    )
    if memories:
        text += "\n\n" + MEMORY_HEADER + "\n" + "\n".join(f"- {m}" for m in memories)
    return text


def clip_text(text: str, max_tokens: int) -> str:
    """A user text longer than `max_tokens` keeps its end (the newest words of a burst), marked as clipped."""
    limit = max(16, max_tokens) * 4
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def build_prompt(tenant: Tenant, now: datetime, history: Sequence[dict[str, Any]], user_text: str,
                 memories: Sequence[str] = (), budget: int | None = None) -> Prompt:
    """`history` is oldest first, as rows with `role` and `body`; the newest turns that fit are kept."""
    budget = budget or tenant.config.max_context_tokens
    user_text = clip_text(user_text, budget // 2)
    memories = list(memories)
    system = {"role": "system", "content": system_prompt(tenant, now, memories)}
    while memories and estimate_message(system) > budget // 3:  # memories are an aid: drop the least relevant
        memories.pop()
        system = {"role": "system", "content": system_prompt(tenant, now, memories)}
    user = {"role": "user", "content": user_text}
    used = estimate_message(system) + estimate_message(user)
    kept: list[dict[str, Any]] = []
    for row in reversed(history):
        message = {"role": row["role"], "content": row["body"]}
        cost = estimate_message(message)
        if used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    # A conversation window must not start with an orphan assistant message.
    while kept and kept[0]["role"] != "user":
        used -= estimate_message(kept.pop(0))
    return Prompt([system, *kept, user], len(kept), len(history) - len(kept), used)
