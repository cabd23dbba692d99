"""Due reminders become outbox rows.

Guarantee: exactly one outbox row per reminder, however many dispatchers run at once: each claims due rows with
`FOR UPDATE SKIP LOCKED` and flips them out of `pending` in the same transaction that writes the outbox row.
The caller enqueues the sends after that commit.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import psycopg

from shared.db import repo
from shared.infobip.client import text_body
from shared.outbox import new_message_id
from shared.tenants import Tenant

LATE_AFTER = timedelta(minutes=5)


def reminder_text(text: str, late: bool) -> str:
    return f"⏰ Reminder{' (late)' if late else ''}: {text}"


def claim_due_reminders(conn: psycopg.Connection, tenant: Tenant, now: datetime, limit: int = 100) -> list[int]:
    """Turn up to `limit` due reminders into queued sends; returns the outbox ids to enqueue after commit."""
    rows = conn.execute(
        """
        SELECT r.id, r.text, r.due_at, r.user_id, u.phone
        FROM reminders r JOIN users u ON u.id = r.user_id
        WHERE r.status = 'pending' AND r.due_at <= %s
        ORDER BY r.due_at
        LIMIT %s
        FOR UPDATE OF r SKIP LOCKED
        """,
        (now, limit),
    ).fetchall()
    outbound_ids = []
    for r in rows:
        late = now - r["due_at"] > LATE_AFTER
        body = reminder_text(r["text"], late)
        mid = new_message_id(tenant.tenant_id)
        outbound_id = repo.create_outbound(
            conn, message_id=mid, user_id=r["user_id"], to_number=r["phone"], body=body, reminder_id=r["id"],
            content=text_body(sender=tenant.waba_number, to=r["phone"], text=body, message_id=mid),
        )
        conn.execute(
            "UPDATE reminders SET status = 'sent', late = %s, outbound_id = %s, updated_at = now() WHERE id = %s",
            (late, outbound_id, r["id"]),
        )
        outbound_ids.append(outbound_id)
    return outbound_ids
