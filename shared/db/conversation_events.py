"""SQL of `conversation_events` (every switch of a user's conversation state: handoff, handback, opt_out, opt_in;
who, when and why) and of `handoff_webhook_attempts` (each attempt to tell the business about a handoff).
Functions take an open connection so the caller decides the transaction boundaries."""
from __future__ import annotations

import psycopg


def record(conn: psycopg.Connection, user_id: int, *, kind: str, actor: str, reason: str | None) -> int:
    """Record one switch; returns its id."""
    row = conn.execute("INSERT INTO conversation_events (user_id, kind, actor, reason) VALUES (%s, %s, %s, %s) "
                       "RETURNING id", (user_id, kind, actor, reason)).fetchone()
    return row["id"]


def for_user(conn: psycopg.Connection, user_id: int, limit: int = 100) -> list[dict]:
    """The user's switches, oldest first (the last `limit`)."""
    rows = conn.execute("SELECT id, user_id, kind, actor, reason, created_at FROM conversation_events "
                        "WHERE user_id = %s ORDER BY id DESC LIMIT %s", (user_id, limit)).fetchall()
    return list(reversed(rows))


def get_with_user(conn: psycopg.Connection, event_id: int) -> dict | None:
    """One event with its user's phone, name and current state (what the business webhook tells)."""
    return conn.execute(
        """
        SELECT e.id, e.user_id, e.kind, e.actor, e.reason, e.created_at, u.phone, u.name, u.state
        FROM conversation_events e JOIN users u ON u.id = e.user_id WHERE e.id = %s
        """, (event_id,)).fetchone()


def record_attempt(conn: psycopg.Connection, event_id: int, *, ok: bool, http_status: int | None,
                   error: str | None) -> int:
    """Record one webhook attempt for `event_id`; returns its number (1, 2, ...)."""
    row = conn.execute(
        """
        INSERT INTO handoff_webhook_attempts (event_id, attempt, ok, http_status, error)
        SELECT %s, COALESCE(max(attempt), 0) + 1, %s, %s, %s FROM handoff_webhook_attempts WHERE event_id = %s
        RETURNING attempt
        """, (event_id, ok, http_status, error, event_id)).fetchone()
    return row["attempt"]


def delivered(conn: psycopg.Connection, event_id: int) -> bool:
    """Whether an attempt for `event_id` succeeded (a redelivered task then posts nothing)."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM handoff_webhook_attempts WHERE event_id = %s AND ok) AS d",
                        (event_id,)).fetchone()["d"]


def attempts(conn: psycopg.Connection, event_id: int) -> list[dict]:
    return conn.execute("SELECT attempt, ok, http_status, error, created_at FROM handoff_webhook_attempts "
                        "WHERE event_id = %s ORDER BY attempt", (event_id,)).fetchall()
