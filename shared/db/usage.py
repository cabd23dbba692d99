"""SQL of `llm_usage` (one row per model call) and the daily token budget read from it."""
from __future__ import annotations

from datetime import datetime, time

import psycopg

from shared.config.tenants import Tenant


def start_of_local_day(tenant: Tenant, now: datetime) -> datetime:
    local = now.astimezone(tenant.config.tz)
    return datetime.combine(local.date(), time(0), tzinfo=tenant.config.tz)


def tokens_since(conn: psycopg.Connection, since: datetime) -> int:
    row = conn.execute("SELECT COALESCE(sum(total_tokens), 0) AS n FROM llm_usage WHERE created_at >= %s",
                       (since,)).fetchone()
    return int(row["n"])


def budget_spent(conn: psycopg.Connection, tenant: Tenant, now: datetime) -> bool:
    """True when the tenant's daily token budget (config.daily_token_budget, tenant-local day) is used up."""
    budget = tenant.config.daily_token_budget
    return budget is not None and tokens_since(conn, start_of_local_day(tenant, now)) >= budget


def record_usage(conn: psycopg.Connection, *, user_id: int | None, request_id: str | None, provider: str,
                 model: str, prompt_tokens: int, completion_tokens: int, latency_ms: int,
                 tools_used: list[str], provider_entry: str | None = None,
                 knowledge_chunks: list[int] | None = None) -> None:
    """One model call; `knowledge_chunks`: the business passages its prompt carried (migration 0014)."""
    conn.execute(
        """
        INSERT INTO llm_usage (user_id, request_id, provider, model, prompt_tokens, completion_tokens, total_tokens,
                               latency_ms, tools_used, provider_entry, knowledge_chunks)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (user_id, request_id, provider, model, prompt_tokens, completion_tokens, prompt_tokens + completion_tokens,
         latency_ms, tools_used, provider_entry, knowledge_chunks or []),
    )
