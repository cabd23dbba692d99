"""Due reminders become outbox rows.

Guarantees: exactly one outbox message per reminder, however many dispatchers run at once: each claims due rows
with `FOR UPDATE SKIP LOCKED` and flips them out of `pending` in the same transaction that writes the outbox rows.
The caller enqueues the sends after that commit. A reminder found late (after downtime) is still sent, marked late;
outside the user's 24-hour window it goes out as the tenant's template (shared.delivery.outbox.queue_message). Order: a
reminder is queued like any message, after the user's earlier messages still waiting to be sent, and reminders
claimed together follow each other in due order.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from shared.delivery.outbox import queue_message
from shared.config.tenants import Tenant

LATE_AFTER = timedelta(minutes=5)


def reminder_text(text: str, late: bool) -> str:
    return f"⏰ Reminder{' (late)' if late else ''}: {text}"


@dataclass(frozen=True)
class Claimed:
    reminders: int              # how many due reminders this call took (fewer than the limit: none left)
    send_ids: list[int]         # outbox rows to enqueue after the commit


def claim_due_reminders(conn: psycopg.Connection, tenant: Tenant, now: datetime, limit: int = 100) -> Claimed:
    """Turn up to `limit` due reminders into queued sends (in the caller's transaction)."""
    rows = conn.execute(
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
    send_ids: list[int] = []
    for r in rows:
        late = now - r["due_at"] > LATE_AFTER
        queued = queue_message(conn, tenant, user_id=r["user_id"], phone=r["phone"],
                               text=reminder_text(r["text"], late), now=now, last_inbound_at=r["last_inbound_at"],
                               reminder_id=r["id"])
        conn.execute(
            "UPDATE reminders SET status = %s, late = %s, outbound_id = %s, updated_at = now() WHERE id = %s",
            ("not_sent" if queued.mode == "not_sent" else "sent", late, queued.row_ids[0], r["id"]),
        )
        send_ids += queued.send_ids
    return Claimed(len(rows), send_ids)
