"""Due reminders become outbox rows.

Guarantees: exactly one outbox message per reminder, however many dispatchers run at once: each claims due rows
with `FOR UPDATE SKIP LOCKED` and flips them out of `pending` in the same transaction that writes the outbox rows.
The sends are registered on that transaction and published after its commit (shared/db/unit_of_work.py). A
reminder found late (after downtime) is still sent, marked late; outside the user's 24-hour window it goes out as
the tenant's template (shared.delivery.outbox.queue_message). Order: a reminder is queued like any message, after
the user's earlier messages still waiting to be sent, and reminders claimed together follow each other in due order.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from shared.db.unit_of_work import Transaction
from shared.delivery.outbox import queue_message

LATE_AFTER = timedelta(minutes=5)


def reminder_text(text: str, late: bool) -> str:
    return f"⏰ Reminder{' (late)' if late else ''}: {text}"


def claim_due_reminders(tx: Transaction, now: datetime, limit: int = 100) -> int:
    """Turn up to `limit` due reminders into queued sends in `tx`; returns how many it took (fewer than `limit`:
    none left)."""
    conn = tx.conn
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
    for r in rows:
        late = now - r["due_at"] > LATE_AFTER
        queued = queue_message(conn, tx.tenant, user_id=r["user_id"], phone=r["phone"],
                               text=reminder_text(r["text"], late), now=now, last_inbound_at=r["last_inbound_at"],
                               reminder_id=r["id"])
        conn.execute(
            "UPDATE reminders SET status = %s, late = %s, outbound_id = %s, updated_at = now() WHERE id = %s",
            ("not_sent" if queued.mode == "not_sent" else "sent", late, queued.row_ids[0], r["id"]),
        )
        tx.send_after_commit(queued.send_ids)
    return len(rows)
