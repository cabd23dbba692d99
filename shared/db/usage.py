"""Token accounting queries: what a tenant spent today, for the daily budget."""
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
