"""SQL of the console's Usage page (issue 14): model calls, tokens and latency percentiles per tenant-local day,
tokens per day and model (for the billed cost, issue 17), and the sends that failed. Reads only; the daily budget itself is read by shared.db.usage (the turn's check).

Functions take an open connection and never commit.
"""
from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.rows import dict_row

# What a send that did not reach the user ends as (see migrations/0001_init.sql, outbound_messages.status).
FAILED_STATUSES = ("failed", "not_sent", "undeliverable", "expired", "rejected")


def daily(conn: psycopg.Connection, *, timezone: str, since: datetime, until: datetime) -> list[dict]:
    """Per tenant-local day with calls: calls, tokens and latency p50/p95/p99 (ms), oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("""
            SELECT (created_at AT TIME ZONE %s)::date AS day, count(*) AS calls,
                   sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
                   sum(total_tokens) AS total_tokens,
                   percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms) AS latency
            FROM llm_usage WHERE created_at >= %s AND created_at < %s GROUP BY 1 ORDER BY 1
        """, (timezone, since, until)).fetchall()


def per_model(conn: psycopg.Connection, *, timezone: str, since: datetime, until: datetime) -> list[dict]:
    """Per tenant-local day and model: prompt, cached prompt (migration 0020) and completion tokens, what the billed
    cost is computed from (shared.config.prices.bills_by_day), oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("""
            SELECT (created_at AT TIME ZONE %s)::date AS day, model, count(*) AS calls,
                   sum(prompt_tokens) AS prompt_tokens, sum(cached_prompt_tokens) AS cached_prompt_tokens,
                   sum(completion_tokens) AS completion_tokens
            FROM llm_usage WHERE created_at >= %s AND created_at < %s GROUP BY 1, 2 ORDER BY 1, 2
        """, (timezone, since, until)).fetchall()


def period(conn: psycopg.Connection, *, since: datetime, until: datetime) -> dict:
    """Calls, tokens and latency p50/p95/p99 (ms; None without calls) over the whole period."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("""
            SELECT count(*) AS calls, coalesce(sum(total_tokens), 0) AS total_tokens,
                   percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms) AS latency
            FROM llm_usage WHERE created_at >= %s AND created_at < %s
        """, (since, until)).fetchone()


def failed_sends(conn: psycopg.Connection, *, limit: int = 50) -> list[dict]:
    """The latest sends that did not reach the user, newest first, with why: our reason in words, else Infobip's
    error (a failed post's `text`, a delivery report's `description` or `name`), else the report's status name."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("""
            SELECT o.id, o.message_id, o.to_number, o.kind, o.part, o.status, o.status_name, o.attempts,
                   left(o.body, 200) AS body, u.name AS user_name, o.created_at, o.updated_at,
                   coalesce(nullif(o.reason, ''), nullif(o.error->>'description', ''),
                            nullif(o.error->>'text', ''), nullif(o.error->>'name', ''), o.status_name) AS reason
            FROM outbound_messages o LEFT JOIN users u ON u.id = o.user_id
            WHERE o.status = ANY(%s) ORDER BY o.updated_at DESC, o.id DESC LIMIT %s
        """, (list(FAILED_STATUSES), limit)).fetchall()
