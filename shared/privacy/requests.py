"""A user's data on request: everything stored about one user as JSON (`export_user`), its erasure
(`forget_user`), and the erasure a user asks for by message, with a confirmation step (`handle_in_turn`, called
by the turn).

Guarantees of `forget_user`:
- it takes the user's turn lock (shared.db.messages, the lock turns hold for their whole transaction) and so
  waits for a turn in flight to commit, then deletes what that turn wrote too; no turn runs while it deletes;
- everything about the user goes: messages, the conversation summary, memory items, reminders, outbound rows (texts and number), pending
  privacy requests, conversation events, delivery reports kept for the user's sends, and the user row (phone and
  name). Late work then finds nothing and recreates nothing: a send task finds no outbox row, a turn retry finds no
  pending message, writes that reference the user fail on the foreign key; a report that arrives later for one of
  the user's sends is kept without its number (migration 0010's trigger, fed by `forgotten_messages`). A message
  the same phone writes afterwards makes a NEW user;
- usage survives for billing, anonymised: llm_usage rows lose user_id and request_id;
- an audit row records who erased what (counts), with a salted hash of the phone as subject, never the phone.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from shared.db import audit, messages, user_data
from shared.db import summaries as summaries_db
from shared.db.unit_of_work import Transaction
from shared.delivery.outbox import queue_reply
from shared.privacy.phrases import erasure_request_language, is_confirmation, question

log = logging.getLogger(__name__)

CONFIRMATION_MINUTES = 15
FORGOTTEN_IDS_KEPT = timedelta(days=30)  # delivery reports come within days of a send
EXPORT_TABLES = ("messages", "memory_chunks", "reminders", "outbound_messages", "llm_usage", "conversation_events",
                 "privacy_requests")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def subject_hash(conn: psycopg.Connection, phone: str) -> str:
    """The audit subject of a phone: sha256 of the tenant database's random salt and the phone. It lets an
    operator who is given the number again check that it was erased; it never stores the number."""
    salt = audit.salt(conn, secrets.token_hex(32))
    return hashlib.sha256(f"{salt}:{phone}".encode()).hexdigest()


def export_user(conn: psycopg.Connection, user_id: int, *, actor: str) -> dict | None:
    """Everything stored about the user, JSON-ready, or None when there is no such user; audited."""
    user = user_data.user_row(conn, user_id)
    if user is None:
        return None
    tables = {t: user_data.rows_of(conn, t, user_id) for t in EXPORT_TABLES
              if t != "conversation_events" or user_data.has_table(conn, t)}
    tables["conversation_summaries"] = summaries_db.rows_for_export(conn, user_id)
    audit.record(conn, actor=actor, action="user.export", subject_hash=subject_hash(conn, user["phone"]),
                 detail={t: len(rows) for t, rows in tables.items()})
    return _jsonable({"user": user, **tables})


def forget_user(conn: psycopg.Connection, user_id: int, *, actor: str, now: datetime) -> dict | None:
    """Erase the user (see the module's guarantees) in the caller's transaction; returns the counts of what was
    deleted, or None when there is no such user (erased before)."""
    messages.wait_for_turn_lock(conn, user_id)  # a turn in flight commits first; its rows are deleted below
    user = user_data.user_row(conn, user_id)
    if user is None:
        return None
    subject = subject_hash(conn, user["phone"])
    sends = user_data.forget_sends(conn, user_id)
    usage = user_data.anonymise_usage(conn, user_id)
    summaries = summaries_db.delete_for_user(conn, user_id)  # (ON DELETE CASCADE too; counted here)
    counts = user_data.delete_rows(conn, user_id, user_data.has_table(conn, "conversation_events"))
    counts["conversation_summaries"] = summaries
    user_data.purge_forgotten_ids(conn, now - FORGOTTEN_IDS_KEPT)
    detail = {**counts, "sends_forgotten": sends, "usage_rows_anonymised": usage}
    audit.record(conn, actor=actor, action="user.forget", subject_hash=subject, detail=detail)
    log.info("user data erased", extra={"actor": actor, "audit_subject": subject[:12], **counts})
    return detail


# ------------------------------------------------------------ asked by message, inside the user's turn

@dataclass
class Handled:
    """The turn's messages were a privacy request (or its confirmation): the turn ends with this outcome."""

    answered: list[int] = field(default_factory=list)
    reason: str = ""


def handle_in_turn(tx: Transaction, user: dict, rows: list[dict], *, now: datetime,
                   request_id: str | None) -> Handled | None:
    """Called by the turn (which holds the user's turn lock) with the messages it is about to answer: an erasure
    request is answered with the confirmation question; a YES to a pending, unexpired question erases the user
    (nothing is sent afterwards: the number is gone); anything else drops a pending question and returns None,
    and the turn goes on as usual."""
    conn, user_id = tx.conn, user["id"]
    ids = [m["id"] for m in rows]
    pending = user_data.get_request(conn, user_id)
    if pending is not None and pending["expires_at"] > now and is_confirmation(rows[-1]["body"]):
        forget_user(conn, user_id, actor="user", now=now)
        return Handled(answered=ids, reason="user data erased on the user's request")
    if pending is not None:
        user_data.drop_request(conn, user_id)
    language = next((lang for lang in (erasure_request_language(m["body"]) for m in reversed(rows)) if lang), None)
    if language is None:
        return None
    user_data.put_request(conn, user_id, language, now + timedelta(minutes=CONFIRMATION_MINUTES))
    text = question(language, CONFIRMATION_MINUTES)
    request_id = request_id or rows[-1].get("request_id")
    reply_id = messages.insert_assistant_message(conn, user_id=user_id, body=text, reply_to=ids[-1],
                                                 request_id=request_id)
    queue_reply(tx, user_id=user_id, phone=user["phone"], text=text, source_message=reply_id, request_id=request_id,
                now=now, last_inbound_at=user["last_inbound_at"])
    messages.mark_answered(conn, ids)
    log.info("erasure requested by the user: confirmation asked", extra={"language": language})
    return Handled(answered=ids, reason="erasure confirmation asked")
