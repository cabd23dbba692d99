"""SQL of the `reminders` table: set, listed and cancelled by the reminder tools (always scoped to one user),
claimed by the dispatcher when due."""
from __future__ import annotations

from datetime import datetime

import psycopg


def insert(conn: psycopg.Connection, user_id: int, text: str, due_at: datetime) -> dict:
    return conn.execute(
        "INSERT INTO reminders (user_id, text, due_at) VALUES (%s, %s, %s) RETURNING id, text, due_at, status",
        (user_id, text, due_at),
    ).fetchone()


def list_pending(conn: psycopg.Connection, user_id: int, limit: int) -> list[dict]:
    """The user's pending reminders, soonest first."""
    return conn.execute(
        """SELECT id, text, due_at, status FROM reminders
           WHERE user_id = %s AND status = 'pending' ORDER BY due_at, id LIMIT %s""",
        (user_id, limit),
    ).fetchall()


def cancel(conn: psycopg.Connection, reminder_id: int, user_id: int) -> dict | None:
    """One conditional UPDATE: only the user's own row, and only while still pending (not being sent). Returns the
    cancelled row, or None."""
    return conn.execute(
        """UPDATE reminders SET status = 'cancelled', updated_at = now()
           WHERE id = %s AND user_id = %s AND status = 'pending'
           RETURNING id, text, due_at, status""",
        (reminder_id, user_id),
    ).fetchone()


def claim_due(conn: psycopg.Connection, now: datetime, limit: int) -> list[dict]:
    """Due pending reminders with their user's number and window start, oldest due first, locked for this
    transaction; rows another dispatcher holds are skipped, so two dispatchers never claim one reminder."""
    return conn.execute(
        """
        SELECT r.id, r.text, r.due_at, r.user_id, u.phone, u.last_inbound_at
        FROM reminders r JOIN users u ON u.id = r.user_id
        WHERE r.status = 'pending' AND r.due_at <= %s
        ORDER BY r.due_at
        LIMIT %s
        FOR UPDATE OF r SKIP LOCKED
        """,
        (now, limit),
    ).fetchall()


def mark_dispatched(conn: psycopg.Connection, reminder_id: int, *, status: str, late: bool, outbound_id: int) -> None:
    """Move a claimed reminder out of `pending` (`sent` or `not_sent`), pointing at its outbox row."""
    conn.execute(
        "UPDATE reminders SET status = %s, late = %s, outbound_id = %s, updated_at = now() WHERE id = %s",
        (status, late, outbound_id, reminder_id),
    )
