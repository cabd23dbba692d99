"""SQL for users, messages, the outbox and usage in a tenant database. Functions take an open connection so the
caller decides the transaction boundaries (and so what is committed before a task is enqueued)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

# Outbound statuses ordered by how far a message got; a report never moves a message backwards.
STATUS_RANK = {"queued": 0, "failed": 1, "not_sent": 1, "sent": 2, "undeliverable": 3, "expired": 3,
               "rejected": 3, "delivered": 4, "seen": 5}
REPORT_STATUS = {"PENDING": "sent", "UNDELIVERABLE": "undeliverable", "DELIVERED": "delivered",
                 "EXPIRED": "expired", "REJECTED": "rejected"}


def upsert_user(conn: psycopg.Connection, phone: str, name: str | None, inbound_at: datetime | None) -> int:
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


def get_message_by_infobip_id(conn: psycopg.Connection, infobip_message_id: str) -> dict | None:
    return conn.execute("SELECT * FROM messages WHERE infobip_message_id = %s", (infobip_message_id,)).fetchone()


def set_message_status(conn: psycopg.Connection, message_id: int, status: str) -> None:
    conn.execute("UPDATE messages SET status = %s, updated_at = now() WHERE id = %s", (status, message_id))


def recent_history(conn: psycopg.Connection, user_id: int, limit: int = 20, before_id: int | None = None) -> list[dict]:
    """The user's last `limit` text messages (oldest first), for the prompt."""
    rows = conn.execute(
        """
        SELECT id, role, body FROM messages
        WHERE user_id = %s AND body IS NOT NULL AND (%s::bigint IS NULL OR id < %s)
        ORDER BY id DESC LIMIT %s
        """,
        (user_id, before_id, before_id, limit),
    ).fetchall()
    return list(reversed(rows))


def insert_assistant_message(conn: psycopg.Connection, *, user_id: int, body: str, reply_to: int | None,
                             request_id: str | None) -> int:
    row = conn.execute(
        """
        INSERT INTO messages (user_id, role, body, status, reply_to, request_id)
        VALUES (%s, 'assistant', %s, 'stored', %s, %s) RETURNING id
        """,
        (user_id, body, reply_to, request_id),
    ).fetchone()
    return row["id"]


def create_outbound(conn: psycopg.Connection, *, message_id: str, user_id: int, to_number: str, body: str | None,
                    content: dict, kind: str = "text", part: int = 1, source_message: int | None = None,
                    reminder_id: int | None = None, request_id: str | None = None) -> int:
    """Record a send in the outbox. The send task is enqueued only after this row is committed."""
    row = conn.execute(
        """
        INSERT INTO outbound_messages (message_id, user_id, source_message, reminder_id, part, kind, to_number,
                                       body, content, request_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id
        """,
        (message_id, user_id, source_message, reminder_id, part, kind, to_number, body, Jsonb(content), request_id),
    ).fetchone()
    return row["id"]


def lock_outbound(conn: psycopg.Connection, outbound_id: int) -> dict | None:
    """Lock the outbox row for the duration of the send, so two deliveries of one send task cannot both post."""
    return conn.execute("SELECT * FROM outbound_messages WHERE id = %s FOR UPDATE", (outbound_id,)).fetchone()


def record_send_accepted(conn: psycopg.Connection, outbound_id: int, response: Any) -> None:
    status = (response or {}).get("status") if isinstance(response, dict) else None
    conn.execute(
        """
        UPDATE outbound_messages SET
            status = CASE WHEN status = 'queued' OR status = 'failed' THEN 'sent' ELSE status END,
            status_group = COALESCE(status_group, %s), status_name = COALESCE(status_name, %s),
            infobip_response = %s, error = NULL, attempts = attempts + 1, sent_at = now(), updated_at = now()
        WHERE id = %s
        """,
        ((status or {}).get("groupName"), (status or {}).get("name"), Jsonb(response), outbound_id),
    )


def record_send_error(conn: psycopg.Connection, outbound_id: int, error: dict, final: bool) -> None:
    conn.execute(
        """
        UPDATE outbound_messages SET status = CASE WHEN %s THEN 'failed' ELSE status END,
            error = %s, attempts = attempts + 1, updated_at = now()
        WHERE id = %s
        """,
        (final, Jsonb(error), outbound_id),
    )


def apply_delivery_report(conn: psycopg.Connection, message_id: str, report: dict) -> bool:
    """Apply a delivery report; a report never moves a message back (a late PENDING after DELIVERED is ignored).

    Returns False when no outbound row has this messageId (yet).
    """
    group = ((report.get("status") or {}).get("groupName") or "").upper()
    new_status = REPORT_STATUS.get(group, "sent")
    error = report.get("error") or None
    if error and (error.get("id") in (0, "0") or error.get("name") == "NO_ERROR"):
        error = None
    row = conn.execute("SELECT id, status FROM outbound_messages WHERE message_id = %s FOR UPDATE",
                       (message_id,)).fetchone()
    if row is None:
        return False
    if STATUS_RANK.get(new_status, 0) >= STATUS_RANK.get(row["status"], 0):
        conn.execute(
            """
            UPDATE outbound_messages SET status = %s, status_group = %s, status_name = %s,
                error = COALESCE(%s, error),
                delivered_at = CASE WHEN %s = 'delivered' THEN COALESCE(delivered_at, now()) ELSE delivered_at END,
                updated_at = now()
            WHERE id = %s
            """,
            (new_status, group or None, (report.get("status") or {}).get("name"),
             Jsonb(error) if error else None, new_status, row["id"]),
        )
    return True


def apply_seen_report(conn: psycopg.Connection, message_id: str, seen_at: datetime | None) -> bool:
    row = conn.execute(
        """
        UPDATE outbound_messages SET status = 'seen', seen_at = COALESCE(seen_at, %s, now()),
            delivered_at = COALESCE(delivered_at, %s, now()), updated_at = now()
        WHERE message_id = %s RETURNING id
        """,
        (seen_at, seen_at, message_id),
    ).fetchone()
    return row is not None


def record_usage(conn: psycopg.Connection, *, user_id: int | None, request_id: str | None, provider: str,
                 model: str, prompt_tokens: int, completion_tokens: int, latency_ms: int,
                 tools_used: list[str]) -> None:
    conn.execute(
        """
        INSERT INTO llm_usage (user_id, request_id, provider, model, prompt_tokens, completion_tokens, total_tokens,
                               latency_ms, tools_used)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (user_id, request_id, provider, model, prompt_tokens, completion_tokens, prompt_tokens + completion_tokens,
         latency_ms, tools_used),
    )
