"""SQL of the operator console's read marks (migration 0016): per conversation, the newest message an operator
opened, from which the list counts the user's unread messages; and the Infobip errors of a conversation's sends
(the console shows why a message failed). Functions take an open connection: the caller owns the transaction."""
from __future__ import annotations

import psycopg


def mark_read(conn: psycopg.Connection, user_id: int, message_id: int, operator_id: int) -> None:
    """The operator has seen every message up to `message_id`; a late, older mark never moves it back."""
    conn.execute(
        """
        INSERT INTO console_reads (user_id, last_seen_message_id, operator_id) VALUES (%s, %s, %s)
        ON CONFLICT (user_id) DO UPDATE SET
            last_seen_message_id = GREATEST(console_reads.last_seen_message_id, EXCLUDED.last_seen_message_id),
            operator_id = EXCLUDED.operator_id, seen_at = now()
        WHERE console_reads.last_seen_message_id < EXCLUDED.last_seen_message_id
        """, (user_id, message_id, operator_id))


def unread_counts(conn: psycopg.Connection, user_ids: list[int]) -> dict[int, int]:
    """Per user: their own messages newer than the last one an operator opened (users without any: absent)."""
    rows = conn.execute(
        """
        SELECT m.user_id, count(*) AS unread
        FROM messages m LEFT JOIN console_reads r ON r.user_id = m.user_id
        WHERE m.user_id = ANY(%s) AND m.role = 'user' AND m.id > COALESCE(r.last_seen_message_id, 0)
        GROUP BY m.user_id
        """, (user_ids,)).fetchall()
    return {r["user_id"]: r["unread"] for r in rows}


def send_errors(conn: psycopg.Connection, message_ids: list[int]) -> dict[int, list[dict]]:
    """Per message: the errors Infobip gave for the sends that carried it (a refused post, an undeliverable
    report), in send order."""
    rows = conn.execute(
        "SELECT source_message, error FROM outbound_messages WHERE source_message = ANY(%s) AND error IS NOT NULL "
        "ORDER BY id", (message_ids,)).fetchall()
    errors: dict[int, list[dict]] = {}
    for row in rows:
        errors.setdefault(row["source_message"], []).append(row["error"])
    return errors
