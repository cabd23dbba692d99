"""SQL of the `pending_actions` table (migration 0018): tool calls waiting for the user's yes
(shared.tools.confirmation). Functions take an open connection, except `claim`, which commits on its own."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

COLUMNS = "id, user_id, tool, arguments, summary, status, created_at, expires_at, resolved_at, outcome"


def propose(conn: psycopg.Connection, user_id: int, tool: str, arguments: dict[str, Any], summary: str,
            now: datetime, expires_at: datetime) -> int:
    """A new pending action of the user; an older one still waiting is cancelled (one question at a time)."""
    conn.execute("UPDATE pending_actions SET status = 'cancelled', resolved_at = %s, outcome = 'superseded' "
                 "WHERE user_id = %s AND status = 'pending'", (now, user_id))
    row = conn.execute(
        "INSERT INTO pending_actions (user_id, tool, arguments, summary, created_at, expires_at) "
        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (user_id, tool, Jsonb(arguments), summary, now, expires_at)).fetchone()
    return row["id"] if isinstance(row, dict) else row[0]


def waiting(conn: psycopg.Connection, user_id: int) -> dict | None:
    """The user's newest action still to settle, or None: `pending` (expired or not), or `running`: claimed by a
    yes whose turn never committed (the per-user turn lock means no other turn of the user runs it now). One
    index probe per turn (migration 0021)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {COLUMNS} FROM pending_actions WHERE user_id = %s "
                           "AND status IN ('pending', 'running') ORDER BY id DESC LIMIT 1", (user_id,)).fetchone()


def claim(dsn: str, action_id: int, status: str, now: datetime) -> bool:
    """Move the action from `pending` to `status` in a transaction of its own, committed before this returns:
    of two turns that try, one wins (the conditional UPDATE), and a claim for `running` stays claimed whatever
    happens to the caller's transaction afterwards (so the action can never run twice)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("UPDATE pending_actions SET status = %s, resolved_at = %s "
                           "WHERE id = %s AND status = 'pending' RETURNING id", (status, now, action_id)).fetchone()
    return row is not None


def finish(conn: psycopg.Connection, action_id: int, status: str, outcome: str, now: datetime) -> None:
    """Record how a claimed action ended (`done`/`failed`), in the caller's transaction."""
    conn.execute("UPDATE pending_actions SET status = %s, outcome = %s, resolved_at = %s WHERE id = %s",
                 (status, outcome, now, action_id))


def get(conn: psycopg.Connection, action_id: int) -> dict | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {COLUMNS} FROM pending_actions WHERE id = %s", (action_id,)).fetchone()
