"""A user's conversation state and its switches.

- `bot`: the bot answers (the default);
- `human`: a person (an operator) handles the conversation: the user's messages are stored `held` and shown, no LLM
  turn runs, reminders still go out;
- `opted_out`: the user sent a stop keyword: nothing at all is sent to them (shared.delivery.outbox refuses every
  message with reason `opted_out`) until they send a start keyword.

Every switch locks the user's row, is recorded in `conversation_events` (who, when, why) and queues its notice to
the user through the outbox (sent after the commit, in order with the user's other messages). Handoffs and
hand-backs also publish the business's signed webhook (shared.handoff.webhook) after the commit when the tenant
declares one. Actors: `user`, `bot`, `operator:<id>`, `system`.
"""
from __future__ import annotations

import logging
from shared.clock import utcnow
from shared.db import conversation_events, messages, users
from shared.db.unit_of_work import Transaction
from shared.db.users import BOT, HUMAN, OPTED_OUT
from shared.delivery.outbox import queue_message
from shared.queueing.tasks import TASK_NOTIFY_HANDOFF
from shared import metrics

__all__ = ["BOT", "HUMAN", "OPTED_OUT", "conversation_state", "take_over", "hand_back", "opt_out", "opt_in"]

log = logging.getLogger(__name__)


def conversation_state(conn, user_id: int) -> str:
    """`bot`, `human` or `opted_out` (`bot` for a user not known yet)."""
    return users.state_of(conn, user_id) or BOT


def take_over(tx: Transaction, user_id: int, *, by: str, reason: str) -> bool:
    """A person takes the conversation over (from `bot` only): recorded, the user told, the business notified.
    False when the user is already `human`, opted out, or unknown."""
    return _switch(tx, user_id, BOT, HUMAN, "handoff", by, reason, tx.tenant.handoff.notice_to_human)


def hand_back(tx: Transaction, user_id: int, *, by: str, reason: str) -> bool:
    """The bot answers again (from `human` only): recorded, the user told, the business notified. False when the
    user is not `human`."""
    return _switch(tx, user_id, HUMAN, BOT, "handback", by, reason, tx.tenant.handoff.notice_to_bot)


def opt_out(tx: Transaction, user_id: int, keyword: str) -> bool:
    """The user sent a stop keyword: from now on nothing is sent to them but this one confirmation. False when
    they had opted out already (no second confirmation)."""
    return _switch(tx, user_id, None, OPTED_OUT, "opt_out", "user", f"keyword {keyword}",
                   tx.tenant.opt_out.stop_confirmation)


def opt_in(tx: Transaction, user_id: int, keyword: str) -> bool:
    """The user sent a start keyword after opting out: messages flow again, starting with one confirmation."""
    return _switch(tx, user_id, OPTED_OUT, BOT, "opt_in", "user", f"keyword {keyword}",
                   tx.tenant.opt_out.start_confirmation)


def _switch(tx: Transaction, user_id: int, source: str | None, target: str, kind: str, by: str, reason: str,
            notice: str) -> bool:
    """Move the user from `source` (None: any state but `target`) to `target`; see the module docstring."""
    conn = tx.conn
    user = users.lock_state(conn, user_id)
    if user is None or user["state"] == target or (source is not None and user["state"] != source):
        return False
    users.set_state(conn, user_id, target)
    event_id = conversation_events.record(conn, user_id, kind=kind, actor=by, reason=reason)
    metrics.conversation_event(kind, tx.tenant.tenant_id)  # counted when written (a rolled-back switch too)
    _tell(tx, user, notice, even_opted_out=kind == "opt_out")
    if kind in ("handoff", "handback") and tx.tenant.handoff.webhook_url:
        tx.publish_after_commit(TASK_NOTIFY_HANDOFF, {"tenant_id": tx.tenant.tenant_id, "event_id": event_id,
                                                      "request_id": tx.request_id}, tracked=True)
    log.info("conversation state switched", extra={"user_id": user_id, "event": kind, "actor": by,
                                                    "from_state": user["state"], "to_state": target})
    return True


def _tell(tx: Transaction, user: dict, text: str, *, even_opted_out: bool) -> None:
    """Store the notice as the assistant's message and queue it (sent after the commit)."""
    reply_id = messages.insert_assistant_message(tx.conn, user_id=user["id"], body=text, reply_to=None,
                                                 request_id=tx.request_id)
    queued = queue_message(tx.conn, tx.tenant, user_id=user["id"], phone=user["phone"], text=text,
                           now=utcnow(), last_inbound_at=user["last_inbound_at"], source_message=reply_id,
                           request_id=tx.request_id, even_opted_out=even_opted_out)
    tx.send_after_commit(queued.send_ids)
