"""SQL of `llm_usage` (one row per model call) and the daily token budget read from it.

Playground turns (migration 0017) are marked `playground` and COUNT toward the daily budget: their tokens cost the
business the same money, and the budget is a spending cap. `tokens_since(..., playground=...)` tells them apart."""
from __future__ import annotations

from datetime import datetime, time

import psycopg

from shared.config.tenants import Tenant


def start_of_local_day(tenant: Tenant, now: datetime) -> datetime:
    local = now.astimezone(tenant.config.tz)
    return datetime.combine(local.date(), time(0), tzinfo=tenant.config.tz)


def tokens_since(conn: psycopg.Connection, since: datetime, playground: bool | None = None) -> int:
    """Tokens used since `since`: all of them (None), or only the playground's (True) or real users' (False)."""
    row = conn.execute("SELECT COALESCE(sum(total_tokens), 0) AS n FROM llm_usage WHERE created_at >= %s "
                       "AND (%s::boolean IS NULL OR playground = %s)", (since, playground, playground)).fetchone()
    return int(row["n"])


def budget_spent(conn: psycopg.Connection, tenant: Tenant, now: datetime) -> bool:
    """True when the tenant's daily token budget (config.daily_token_budget, tenant-local day) is used up."""
    budget = tenant.config.daily_token_budget
    return budget is not None and tokens_since(conn, start_of_local_day(tenant, now)) >= budget


def record_usage(conn: psycopg.Connection, *, user_id: int | None, request_id: str | None, provider: str,
                 model: str, prompt_tokens: int, completion_tokens: int, latency_ms: int,
                 tools_used: list[str], provider_entry: str | None = None,
                 knowledge_chunks: list[int] | None = None, cached_prompt_tokens: int = 0) -> None:
    """One model call; `knowledge_chunks`: the business passages its prompt carried (migration 0014); marked
    `playground` when its user is a playground user (migration 0017); `cached_prompt_tokens`: of its prompt
    tokens, those the provider's prompt cache served (migration 0020; never more than the prompt)."""
    conn.execute(
        """
        INSERT INTO llm_usage (user_id, request_id, provider, model, prompt_tokens, completion_tokens, total_tokens,
                               latency_ms, tools_used, provider_entry, knowledge_chunks, playground,
                               cached_prompt_tokens)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                COALESCE((SELECT playground FROM users WHERE id = %s), false), %s)
        """,
        (user_id, request_id, provider, model, prompt_tokens, completion_tokens, prompt_tokens + completion_tokens,
         latency_ms, tools_used, provider_entry, knowledge_chunks or [], user_id,
         max(0, min(cached_prompt_tokens, prompt_tokens))),
    )
