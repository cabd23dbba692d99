"""SQL of the `messages` table (what users wrote and what we answered) and the per-user turn lock. The tenant
database is the source of truth for message state (`received` -> `answered` | `ignored` | `rate_limited` |
`failed`). Functions take an open connection so the caller decides the transaction boundaries."""
from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

TURN_LOCK = 0x7475726E  # "turn": advisory lock class of the per-user turn lock


def try_lock_turn(conn: psycopg.Connection, user_id: int) -> bool:
    """Take the user's turn lock for the current transaction, or say another turn holds it. An advisory lock: a row
    lock on `users` would also block every insert that references the user (e.g. reminder dispatch)."""
    return conn.execute("SELECT pg_try_advisory_xact_lock(%s::int, %s::int) AS ok",
                        (TURN_LOCK, user_id % 2**31)).fetchone()["ok"]


def wait_for_turn_lock(conn: psycopg.Connection, user_id: int) -> None:
    """Take the user's turn lock for the current transaction, waiting for a turn that still holds it."""
    conn.execute("SELECT pg_advisory_xact_lock(%s::int, %s::int)", (TURN_LOCK, user_id % 2**31))


def insert_inbound(conn: psycopg.Connection, *, user_id: int, infobip_message_id: str, message_type: str,
                   body: str | None, payload: dict, received_at: datetime | None, request_id: str | None,
                   status: str = "received") -> int | None:
    """Store an inbound message once. Returns its id, or None when this messageId was stored before."""
    row = conn.execute(
        """
        INSERT INTO messages (user_id, role, infobip_message_id, message_type, body, payload, status,
                              received_at, request_id)
        VALUES (%s, 'user', %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (infobip_message_id) WHERE infobip_message_id IS NOT NULL DO NOTHING
        RETURNING id
        """,
        (user_id, infobip_message_id, message_type, body, Jsonb(payload), status, received_at, request_id),
    ).fetchone()
    return row["id"] if row else None


def get_by_infobip_id(conn: psycopg.Connection, infobip_message_id: str) -> dict | None:
    return conn.execute("SELECT * FROM messages WHERE infobip_message_id = %s", (infobip_message_id,)).fetchone()


def set_status(conn: psycopg.Connection, message_id: int, status: str) -> None:
    conn.execute("UPDATE messages SET status = %s, updated_at = now() WHERE id = %s", (status, message_id))


def set_statuses(conn: psycopg.Connection, message_ids: list[int], status: str) -> None:
    """Move several messages to `status` (e.g. `held` while a person handles the conversation)."""
    if message_ids:
        conn.execute("UPDATE messages SET status = %s, updated_at = now() WHERE id = ANY(%s)", (status, message_ids))


def mark_answered(conn: psycopg.Connection, message_ids: list[int]) -> None:
    conn.execute("UPDATE messages SET status = 'answered', updated_at = now() WHERE id = ANY(%s)", (message_ids,))


def fail_received(conn: psycopg.Connection, user_id: int) -> list[int]:
    """Mark the user's waiting messages `failed` (a turn that cannot succeed); returns their ids."""
    rows = conn.execute("UPDATE messages SET status = 'failed', updated_at = now() WHERE user_id = %s "
                        "AND role = 'user' AND status = 'received' RETURNING id", (user_id,)).fetchall()
    return [r["id"] for r in rows]


def set_body(conn: psycopg.Connection, message_id: int, body: str) -> None:
    """Store text found later (a transcribed voice note), so history and redeliveries see it."""
    conn.execute("UPDATE messages SET body = %s WHERE id = %s", (body, message_id))


def pending_for_turn(conn: psycopg.Connection, user_id: int) -> list[dict]:
    """The user's `received` messages, oldest first, each with its age (for the debounce window)."""
    return conn.execute(
        """
        SELECT id, body, message_type, payload, infobip_message_id, request_id, received_at,
               (extract(epoch FROM clock_timestamp() - created_at) * 1000)::bigint AS age_ms
        FROM messages WHERE user_id = %s AND role = 'user' AND status = 'received' ORDER BY id
        """,
        (user_id,),
    ).fetchall()


def recent_history(conn: psycopg.Connection, user_id: int, limit: int = 20, before_id: int | None = None) -> list[dict]:
    """The user's last `limit` text messages (oldest first), for the prompt. An operator's messages are the
    assistant's side of the conversation (what the business said), so the model reads them as its own."""
    rows = conn.execute(
        """
        SELECT id, CASE WHEN role = 'operator' THEN 'assistant' ELSE role END AS role, body FROM messages
        WHERE user_id = %s AND body IS NOT NULL AND (%s::bigint IS NULL OR id < %s)
        ORDER BY id DESC LIMIT %s
        """,
        (user_id, before_id, before_id, limit),
    ).fetchall()
    return list(reversed(rows))


def _insert_outgoing(conn: psycopg.Connection, *, user_id: int, role: str, body: str, reply_to: int | None = None,
                     operator_id: str | None = None, request_id: str | None = None, meta: dict | None = None) -> int:
    row = conn.execute(
        """
        INSERT INTO messages (user_id, role, body, status, reply_to, operator_id, request_id, meta)
        VALUES (%s, %s, %s, 'stored', %s, %s, %s, %s) RETURNING id
        """,
        (user_id, role, body, reply_to, operator_id, request_id, Jsonb(meta) if meta is not None else None),
    ).fetchone()
    return row["id"]


def insert_assistant_message(conn: psycopg.Connection, *, user_id: int, body: str, reply_to: int | None,
                             request_id: str | None, meta: dict | None = None) -> int:
    """The bot's reply; `meta`: what its turn did (agent, intent, tools, tokens: migration 0017)."""
    return _insert_outgoing(conn, user_id=user_id, role="assistant", body=body, reply_to=reply_to,
                            request_id=request_id, meta=meta)


def stalled_users(conn: psycopg.Connection, older_than_seconds: int, newer_than_seconds: int = 6 * 3600) -> list[int]:
    """Users with `received` messages that no turn has picked up for a while (a lost task): to re-run.
    Messages older than `newer_than_seconds` are for `abandoned_users` instead: not retried forever."""
    rows = conn.execute(
        "SELECT DISTINCT user_id FROM messages WHERE role = 'user' AND status = 'received' "
        "AND created_at < now() - make_interval(secs => %s) AND created_at > now() - make_interval(secs => %s)",
        (older_than_seconds, newer_than_seconds)).fetchall()
    return [r["user_id"] for r in rows]


def abandoned_users(conn: psycopg.Connection, older_than_seconds: int = 6 * 3600) -> list[int]:
    """Users whose messages stayed `received` for hours (turns kept failing, workers were down): to give up, so
    they get an apology instead of silence and the sweep stops looking at them."""
    rows = conn.execute(
        "SELECT DISTINCT user_id FROM messages WHERE role = 'user' AND status = 'received' "
        "AND created_at <= now() - make_interval(secs => %s)", (older_than_seconds,)).fetchall()
    return [r["user_id"] for r in rows]


def insert_operator_message(conn: psycopg.Connection, *, user_id: int, body: str, operator_id: str,
                            request_id: str | None = None) -> int:
    """What an operator (a person of the business) wrote to the user: role 'operator', with the operator's id."""
    return _insert_outgoing(conn, user_id=user_id, role="operator", body=body, operator_id=operator_id,
                            request_id=request_id)


def conversation_after(conn: psycopg.Connection, user_id: int, after_id: int = 0, limit: int = 200, *,
                       newest: bool = False) -> list[dict]:
    """The user's messages after `after_id`, oldest first: the first `limit` of them, or with `newest` the last
    `limit`. What the Playground and `wabot chat` show, with each reply's `meta`."""
    rows = conn.execute(
        f"""
        SELECT id, role, body, message_type, status, reply_to, infobip_message_id, meta, created_at FROM messages
        WHERE user_id = %s AND id > %s ORDER BY id {'DESC' if newest else 'ASC'} LIMIT %s
        """,
        (user_id, after_id, limit),
    ).fetchall()
    return list(reversed(rows)) if newest else rows
