"""Messages a person of the business (an operator) sends a user: stored with the operator's id (role `operator`,
read by the bot as its own side of the conversation after the hand-back) and sent through the same outbox as the
bot's replies: in order with the user's other messages, retried, as the `reengage` template outside the 24-hour
window, with delivery statuses."""
from __future__ import annotations

from datetime import datetime

from shared.db import messages, users
from shared.db.unit_of_work import Transaction
from shared.db.users import OPTED_OUT
from shared.delivery.outbox import queue_message


class SendRefused(Exception):
    """The message cannot be sent: `reason` is `opted_out` (the user sent a stop keyword), `outside_window` (the
    24-hour window is closed and the tenant has no `reengage` template), `unknown_user` or `empty`. When the message
    was recorded (`outbound_id` set: a `not_sent` row with the reason), the record is in the caller's transaction."""

    def __init__(self, reason: str, outbound_id: int | None = None):
        super().__init__(reason)
        self.reason, self.outbound_id = reason, outbound_id


def send_as_operator(tx: Transaction, user_id: int, operator_id: str, text: str, now: datetime) -> int:
    """Store the operator's message and queue its send (published after `tx` commits); returns the id of its
    (first) outbox row.

    Raises SendRefused. For `opted_out` and `outside_window` the message and its `not_sent` outbox row (with the
    reason) are written in `tx` first: catch SendRefused inside the transaction to keep that record (the admin API
    does), or let it propagate to roll it back."""
    if not text or not text.strip():
        raise SendRefused("empty")
    conn = tx.conn
    user = users.get_user(conn, user_id)
    if user is None:
        raise SendRefused("unknown_user")
    message_id = messages.insert_operator_message(conn, user_id=user_id, body=text, operator_id=operator_id,
                                                  request_id=tx.request_id)
    queued = queue_message(conn, tx.tenant, user_id=user_id, phone=user["phone"], text=text, now=now,
                           last_inbound_at=user["last_inbound_at"], source_message=message_id,
                           request_id=tx.request_id)
    if queued.mode == "not_sent":
        raise SendRefused("opted_out" if user["state"] == OPTED_OUT else "outside_window", queued.row_ids[0])
    tx.send_after_commit(queued.send_ids)
    return queued.row_ids[0]
