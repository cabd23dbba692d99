"""Due reminders become outbox rows.

Guarantees: exactly one outbox message per reminder, however many dispatchers run at once: each claims due rows
with `FOR UPDATE SKIP LOCKED` and flips them out of `pending` in the same transaction that writes the outbox rows.
The sends are registered on that transaction and published after its commit (shared/db/unit_of_work.py). A
reminder found late (after downtime) is still sent, marked late; outside the user's 24-hour window it goes out as
the tenant's template (shared.delivery.outbox.queue_message). Order: a reminder is queued like any message, after
the user's earlier messages still waiting to be sent, and reminders claimed together follow each other in due order.
A reminder for a user who opted out (shared.handoff) is recorded `not_sent` with reason `opted_out` by
queue_message; one for a user a person is talking to (`human`) still goes out.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from shared import metrics
from shared.db import reminders
from shared.db.unit_of_work import Transaction
from shared.delivery.outbox import queue_message

LATE_AFTER = timedelta(minutes=5)


def reminder_text(text: str, late: bool) -> str:
    return f"⏰ Reminder{' (late)' if late else ''}: {text}"


def claim_due_reminders(tx: Transaction, now: datetime, limit: int = 100) -> int:
    """Turn up to `limit` due reminders into queued sends in `tx`; returns how many it took (fewer than `limit`:
    none left)."""
    conn = tx.conn
    rows = reminders.claim_due(conn, now, limit)
    metrics.reminders(tx.tenant.tenant_id, len(rows), sum(1 for r in rows if now - r["due_at"] > LATE_AFTER))
    for r in rows:
        late = now - r["due_at"] > LATE_AFTER
        queued = queue_message(conn, tx.tenant, user_id=r["user_id"], phone=r["phone"],
                               text=reminder_text(r["text"], late), now=now, last_inbound_at=r["last_inbound_at"],
                               reminder_id=r["id"])
        reminders.mark_dispatched(conn, r["id"], status="not_sent" if queued.mode == "not_sent" else "sent",
                                  late=late, outbound_id=queued.row_ids[0])
        tx.send_after_commit(queued.send_ids)
    return len(rows)
