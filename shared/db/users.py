"""SQL of the `users` table: one row per WhatsApp number of a tenant. Functions take an open connection so the
caller decides the transaction boundaries."""
from __future__ import annotations

from datetime import datetime

import psycopg


def upsert_user(conn: psycopg.Connection, phone: str, name: str | None, inbound_at: datetime | None) -> int:
    """The user's id, created on first contact; a later message never moves `last_inbound_at` back."""
    row = conn.execute(
        """
        INSERT INTO users (phone, name, last_inbound_at) VALUES (%s, %s, %s)
        ON CONFLICT (phone) DO UPDATE SET
            name = COALESCE(EXCLUDED.name, users.name),
            last_inbound_at = GREATEST(users.last_inbound_at, EXCLUDED.last_inbound_at),
            updated_at = now()
        RETURNING id
        """,
        (phone, name, inbound_at),
    ).fetchone()
    return row["id"]


def get_user(conn: psycopg.Connection, user_id: int) -> dict | None:
    """What a reply or a send needs to know about its user: the number, the name for templates, the window
    start."""
    return conn.execute("SELECT id, phone, name, last_inbound_at FROM users WHERE id = %s", (user_id,)).fetchone()


def last_inbound_at(conn: psycopg.Connection, user_id: int) -> datetime | None:
    """When the user last wrote: the start of the 24-hour window."""
    row = conn.execute("SELECT last_inbound_at FROM users WHERE id = %s", (user_id,)).fetchone()
    return row["last_inbound_at"] if row else None
