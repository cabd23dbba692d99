"""SQL of the per-user conversation summaries (migration 0019; the domain is shared/conversation/summaries.py).
Functions take an open connection so the caller decides the transaction boundaries."""
from __future__ import annotations

from datetime import datetime, timedelta

import psycopg


def get(conn: psycopg.Connection, user_id: int) -> dict | None:
    """The user's summary row (summary, covers_to, updates, requested_at), or None."""
    return conn.execute("SELECT user_id, summary, covers_to, updates, requested_at, updated_at "
                        "FROM conversation_summaries WHERE user_id = %s", (user_id,)).fetchone()


def request(conn: psycopg.Connection, user_id: int, now: datetime, every: timedelta) -> bool:
    """Mark that the user's summary should be updated; True when this call made the request (none was made in the
    last `every`), so the caller publishes the task once, not on every turn while it is pending."""
    row = conn.execute(
        """
        INSERT INTO conversation_summaries (user_id, requested_at) VALUES (%s, %s)
        ON CONFLICT (user_id) DO UPDATE SET requested_at = EXCLUDED.requested_at
            WHERE conversation_summaries.requested_at IS NULL OR conversation_summaries.requested_at < %s
        RETURNING user_id
        """, (user_id, now, now - every)).fetchone()
    return row is not None


def messages_after(conn: psycopg.Connection, user_id: int, after_id: int, limit: int) -> list[dict]:
    """The user's text messages after `after_id`, oldest first (at most `limit`), as the prompt's history reads
    them (an operator's messages are the assistant's side)."""
    return conn.execute(
        """
        SELECT id, CASE WHEN role = 'operator' THEN 'assistant' ELSE role END AS role, body FROM messages
        WHERE user_id = %s AND body IS NOT NULL AND id > %s
        ORDER BY id LIMIT %s
        """, (user_id, after_id, limit)).fetchall()


def advance(conn: psycopg.Connection, user_id: int, *, read_covers_to: int, summary: str, covers_to: int,
            now: datetime) -> bool:
    """Store the new summary if nobody moved it since it was read (`covers_to` still `read_covers_to`); False
    when another run got there first, or the user is gone (then nothing is written)."""
    row = conn.execute(
        """
        UPDATE conversation_summaries SET summary = %s, covers_to = %s, updates = updates + 1, updated_at = %s,
               requested_at = NULL
        WHERE user_id = %s AND covers_to = %s AND %s > covers_to
        RETURNING user_id
        """, (summary, covers_to, now, user_id, read_covers_to, covers_to)).fetchone()
    return row is not None


def delete_for_user(conn: psycopg.Connection, user_id: int) -> int:
    return conn.execute("DELETE FROM conversation_summaries WHERE user_id = %s", (user_id,)).rowcount


def rows_for_export(conn: psycopg.Connection, user_id: int) -> list[dict]:
    return conn.execute("SELECT * FROM conversation_summaries WHERE user_id = %s", (user_id,)).fetchall()
