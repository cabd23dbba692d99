"""SQL of one user's data as a whole: what an export reads, what an erasure deletes, the operators' views of the
conversations (list, messages with their delivery status, usage per day), and users' pending privacy requests.
Functions take an open connection so the caller decides the transaction boundaries."""
from __future__ import annotations

from datetime import datetime

import psycopg

PER_USER_TABLES = ("messages", "reminders", "outbound_messages", "llm_usage", "conversation_events",
                   "privacy_requests")
MEMORY_COLUMNS = "id, user_id, kind, title, content, starts_at, metadata, created_at, updated_at"


def has_table(conn: psycopg.Connection, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL AS ok", (table,)).fetchone()["ok"]


def user_id_by_phone(conn: psycopg.Connection, phone: str) -> int | None:
    row = conn.execute("SELECT id FROM users WHERE phone = %s", (phone,)).fetchone()
    return row["id"] if row else None


def user_row(conn: psycopg.Connection, user_id: int) -> dict | None:
    return conn.execute("SELECT * FROM users WHERE id = %s", (user_id,)).fetchone()


def rows_of(conn: psycopg.Connection, table: str, user_id: int) -> list[dict]:
    """Every row of `table` (one of PER_USER_TABLES, or memory_chunks without its vectors) about the user."""
    if table == "memory_chunks":
        return conn.execute(f"SELECT {MEMORY_COLUMNS} FROM memory_chunks WHERE user_id = %s ORDER BY id",
                            (user_id,)).fetchall()
    if table not in PER_USER_TABLES:
        raise ValueError(f"not a per-user table: {table}")
    return conn.execute(f"SELECT * FROM {table} WHERE user_id = %s ORDER BY 1", (user_id,)).fetchall()


def forget_sends(conn: psycopg.Connection, user_id: int) -> int:
    """Remember the messageIds of the user's sends (a late report then stays anonymous: migration 0010's
    trigger) and drop the reports kept for them; returns how many sends there were."""
    rows = conn.execute("INSERT INTO forgotten_messages (message_id) SELECT message_id FROM outbound_messages "
                        "WHERE user_id = %s ON CONFLICT DO NOTHING RETURNING message_id", (user_id,)).fetchall()
    ids = [r["message_id"] for r in rows]
    conn.execute("DELETE FROM pending_reports WHERE message_id = ANY(%s)", (ids,))
    return len(ids)


def anonymise_usage(conn: psycopg.Connection, user_id: int) -> int:
    """Keep the user's LLM calls for billing, unlinked from the user and from the request ids in the logs."""
    return conn.execute("UPDATE llm_usage SET user_id = NULL, request_id = NULL WHERE user_id = %s",
                        (user_id,)).rowcount


def delete_rows(conn: psycopg.Connection, user_id: int, with_events: bool) -> dict[str, int]:
    """Delete everything stored about the user, then the user row itself (phone and name); returns the counts."""
    counts = {}
    conn.execute("UPDATE reminders SET outbound_id = NULL WHERE user_id = %s", (user_id,))
    for table in ("reminders", "outbound_messages", "memory_chunks", "privacy_requests") + (
            ("conversation_events",) if with_events else ()):
        counts[table] = conn.execute(f"DELETE FROM {table} WHERE user_id = %s", (user_id,)).rowcount
    conn.execute("UPDATE messages SET reply_to = NULL WHERE user_id = %s AND reply_to IS NOT NULL", (user_id,))
    counts["messages"] = conn.execute("DELETE FROM messages WHERE user_id = %s", (user_id,)).rowcount
    counts["users"] = conn.execute("DELETE FROM users WHERE id = %s", (user_id,)).rowcount
    return counts


def purge_forgotten_ids(conn: psycopg.Connection, older_than: datetime) -> int:
    """Reports come within days of a send: the ids of forgotten sends are not needed after that."""
    return conn.execute("DELETE FROM forgotten_messages WHERE forgotten_at < %s", (older_than,)).rowcount


# ------------------------------------------------------------ operators' views

def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def list_conversations(conn: psycopg.Connection, *, state: str | None, search: str | None, digits: str | None,
                       limit: int, offset: int) -> list[dict]:
    """Users with their conversation state and last message, the most recently active first. `search` matches
    the name or any message text (case-insensitive), `digits` a part of the phone. Playground users (operators
    trying the bot: migration 0017) are not conversations with customers and are left out."""
    like = _like(search) if search else None
    phone_like = _like(digits) if digits else None
    return conn.execute(
        """
        SELECT u.id AS user_id, u.phone, u.name, u.state, u.state_changed_at, u.last_inbound_at, u.created_at,
               m.id AS last_message_id, m.role AS last_message_role, m.body AS last_message_body,
               m.created_at AS last_message_at
        FROM users u
        LEFT JOIN LATERAL (SELECT id, role, body, created_at FROM messages WHERE user_id = u.id
                           ORDER BY id DESC LIMIT 1) m ON true
        WHERE NOT u.playground AND (%(state)s::text IS NULL OR u.state = %(state)s)
          AND (%(like)s::text IS NULL AND %(phone)s::text IS NULL
               OR u.phone LIKE %(phone)s OR u.name ILIKE %(like)s
               OR EXISTS (SELECT 1 FROM messages x WHERE x.user_id = u.id AND x.body ILIKE %(like)s))
        ORDER BY COALESCE(m.created_at, u.created_at) DESC, u.id DESC
        LIMIT %(limit)s OFFSET %(offset)s
        """,
        {"state": state, "like": like, "phone": phone_like, "limit": limit, "offset": offset}).fetchall()


def conversation(conn: psycopg.Connection, user_id: int) -> dict | None:
    return conn.execute("SELECT id AS user_id, phone, name, state, state_changed_at, last_inbound_at, created_at "
                        "FROM users WHERE id = %s", (user_id,)).fetchone()


def messages_with_delivery(conn: psycopg.Connection, user_id: int, *, before_id: int | None,
                           limit: int) -> list[dict]:
    """The user's messages, newest first, each with the delivery status of every send that carried it."""
    return conn.execute(
        """
        SELECT m.id, m.role, m.message_type, m.body, m.status, m.operator_id, m.received_at, m.created_at,
               COALESCE(jsonb_agg(jsonb_build_object(
                   'part', o.part, 'kind', o.kind, 'status', o.status, 'reason', o.reason,
                   'sent_at', o.sent_at, 'delivered_at', o.delivered_at, 'seen_at', o.seen_at) ORDER BY o.id)
                 FILTER (WHERE o.id IS NOT NULL), '[]'::jsonb) AS delivery
        FROM messages m LEFT JOIN outbound_messages o ON o.source_message = m.id
        WHERE m.user_id = %s AND (%s::bigint IS NULL OR m.id < %s)
        GROUP BY m.id ORDER BY m.id DESC LIMIT %s
        """, (user_id, before_id, before_id, limit)).fetchall()


def usage_per_day(conn: psycopg.Connection, *, timezone: str, since: datetime, until: datetime) -> list[dict]:
    """LLM calls and tokens per tenant-local day (anonymised rows of forgotten users included)."""
    return conn.execute(
        """
        SELECT (created_at AT TIME ZONE %s)::date AS day, count(*) AS calls,
               sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
               sum(total_tokens) AS total_tokens, count(DISTINCT user_id) AS users
        FROM llm_usage WHERE created_at >= %s AND created_at < %s GROUP BY 1 ORDER BY 1
        """, (timezone, since, until)).fetchall()


# ------------------------------------------------------------ privacy requests by message

def put_request(conn: psycopg.Connection, user_id: int, language: str, expires_at: datetime) -> None:
    conn.execute(
        "INSERT INTO privacy_requests (user_id, language, expires_at) VALUES (%s, %s, %s) ON CONFLICT (user_id) "
        "DO UPDATE SET language = EXCLUDED.language, expires_at = EXCLUDED.expires_at, created_at = now()",
        (user_id, language, expires_at))


def get_request(conn: psycopg.Connection, user_id: int) -> dict | None:
    return conn.execute("SELECT user_id, kind, language, expires_at FROM privacy_requests WHERE user_id = %s",
                        (user_id,)).fetchone()


def drop_request(conn: psycopg.Connection, user_id: int) -> None:
    conn.execute("DELETE FROM privacy_requests WHERE user_id = %s", (user_id,))
