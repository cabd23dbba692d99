"""Who answers a turn's messages, decided before any LLM call (shared.conversation.turn calls `route` under the
user's turn lock).

The messages are read oldest first, and each moves the conversation on:
- a stop keyword (whole message) opts the user out: one confirmation, then nothing is sent to them;
- a start keyword, while opted out, opts them in again (one confirmation); otherwise it is an ordinary message;
- while opted out, messages are stored `opted_out` (not answered);
- while a person handles the conversation (`human`), messages are stored `held` (shown to the operator); when no
  operator did anything for the tenant's `handoff.idle_minutes`, the conversation first goes back to the bot;
- a request for a person (shared.handoff.intent) hands the conversation to a person: it and the messages before
  it in the same turn are `held`;
- anything else is for the bot. Keyword messages are `answered` (by their confirmation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.db import messages, users
from shared.db.unit_of_work import Transaction
from shared.db.users import BOT, HUMAN, OPTED_OUT
from shared.handoff.intent import asks_for_person, matched_keyword
from shared.handoff.state import hand_back, opt_in, opt_out, take_over

PERSON_ASKED = "the user asked for a person"


@dataclass
class Routed:
    state: str                                          # the conversation's state after these messages
    for_bot: list[dict] = field(default_factory=list)   # what the bot answers (still `received`)
    switched: bool = False                              # the state changed in this transaction


def route(tx: Transaction, user: dict, rows: list[dict], now: datetime) -> Routed:
    """Route `rows` (the user's pending messages, oldest first; `user` has id and state); see the module
    docstring. Messages not for the bot get their status here."""
    out = Routed(user["state"])
    if out.state == HUMAN and _idle(tx, user["id"], now):
        minutes = tx.tenant.handoff.idle_minutes
        out.switched = hand_back(tx, user["id"], by="system", reason=f"no operator activity for {minutes} minutes")
        out.state = BOT if out.switched else out.state
    for row in rows:
        _step(tx, user["id"], row, out)
    return out


def _step(tx: Transaction, user_id: int, row: dict, out: Routed) -> None:
    conn, tenant, text = tx.conn, tx.tenant, row["body"]
    stop = matched_keyword(text, tenant.opt_out.stop_keywords)
    start = matched_keyword(text, tenant.opt_out.start_keywords)
    if stop and out.state != OPTED_OUT:
        _leave_bot(conn, out, "opted_out")
        out.switched |= opt_out(tx, user_id, stop)
        out.state = OPTED_OUT
        messages.set_status(conn, row["id"], "answered")
    elif out.state == OPTED_OUT and start:
        out.switched |= opt_in(tx, user_id, start)
        out.state = BOT
        messages.set_status(conn, row["id"], "answered")
    elif out.state == OPTED_OUT:
        messages.set_status(conn, row["id"], "opted_out")
    elif out.state == HUMAN:
        messages.set_status(conn, row["id"], "held")
    elif asks_for_person(text, tenant.handoff.languages):
        _leave_bot(conn, out, "held")
        out.switched |= take_over(tx, user_id, by="user", reason=PERSON_ASKED)
        out.state = HUMAN
        messages.set_status(conn, row["id"], "held")
    else:
        out.for_bot.append(row)


def _leave_bot(conn, out: Routed, status: str) -> None:
    """The messages the bot was going to answer in this turn are not answered after all."""
    messages.set_statuses(conn, [m["id"] for m in out.for_bot], status)
    out.for_bot.clear()


def release_idle(tx: Transaction, now: datetime, limit: int = 100) -> int:
    """The beat's side of `idle_minutes`: conversations no person touched for that long go back to the bot now
    (with the notice), not only at the user's next message. A user whose turn is running is left to that turn."""
    minutes = tx.tenant.handoff.idle_minutes
    released = 0
    for user_id in users.idle_with_a_person(tx.conn, now - timedelta(minutes=minutes), limit):
        if messages.try_lock_turn(tx.conn, user_id):
            released += hand_back(tx, user_id, by="system", reason=f"no operator activity for {minutes} minutes")
    return released


def _idle(tx: Transaction, user_id: int, now: datetime) -> bool:
    since = users.human_idle_since(tx.conn, user_id)
    return since is not None and now - since > timedelta(minutes=tx.tenant.handoff.idle_minutes)
