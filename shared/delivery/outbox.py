"""The outbox: what we send a user, stored first, then posted to Infobip in order and with bounded retries.

Guarantees:
- a send row is committed before its task is enqueued (nothing is sent that was not stored): sends are registered
  on the unit of work's transaction and published only after it committed (shared/db/unit_of_work.py);
- only a `queued` row is posted, under a per-row lock (two tasks never post one row at the same time), so a
  redelivered or re-published task never posts a message whose acceptance was recorded; retries reuse the row and
  therefore the same messageId;
- each post is counted on the row (attempts, posting_at) and committed BEFORE the HTTP call, so the bound of
  MAX_ATTEMPTS posts holds even when answers are lost. At-least-once, not exactly-once: when Infobip's answer is lost
  (the worker is killed during the post, or the database fails before the result is committed) the row is still
  `queued` and is posted again with the same messageId. Whether Infobip drops a repeated messageId is UNKNOWN, so
  the user may then get the message twice (unless a delivery report for the first post arrived meanwhile: it moves
  the row out of `queued` and the repeat is skipped);
- messages reach a user in the order they were queued: the parts of a long reply in order (part n+1 is posted
  only after Infobip accepted part n), and across messages (replies of different turns, reminders, notices) part 1
  of a new message waits for the user's newest row that was still queued. A waiting row's task ends; the task of
  the row it waits for publishes it after that row's acceptance (or final failure) is committed. The wait is
  bounded: when the earlier message keeps failing (Infobip retries), a later message goes anyway once it waited
  MAX_ORDER_WAIT (logged); the parts of one reply always stay in order;
- a part that fails stops the rest of its own reply; a message that fails does not stop the next message;
- outside the 24-hour window (with a safety margin) a message goes out as the tenant's `reengage` template, or is
  recorded `not_sent` with the reason when the tenant has none;
- a playground user's messages (the console's Playground, `wabot chat`: users.playground) take every step above,
  but their "Infobip" is `PlaygroundClient`, chosen per user here (`client_for_user`) and nowhere else: no HTTP
  call is ever made for them (no send, no blue ticks, no typing indicator); a send is recorded `delivered` at once.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

import psycopg
from shared import metrics
from shared.clock import utcnow
from shared.db import outbound, users
from shared.db.unit_of_work import Transaction, UnitOfWork
from shared.delivery.infobip.client import (TEMPLATE_PATH, TEXT_PATH, InfobipClient, MediaDownloadError, SendResult,
                                            accepted_status, template_body, text_body)
from shared.delivery.infobip.errors import InfobipError
from shared.delivery.infobip.retry import DEFAULT_BASE_SECONDS, MAX_ATTEMPTS, retry_delay
from shared.delivery.infobip.split import split_text
from shared.delivery.infobip.templates import Template, reengage_template, render_placeholders
from shared.config.tenants import Tenant

log = logging.getLogger(__name__)

PATHS = {
    "text": TEXT_PATH,
    "template": TEMPLATE_PATH,
}
# WhatsApp delivers free text only within 24 hours of the user's last message; we stop 30 minutes early so a
# message queued at 23h59 is not refused on arrival.
WINDOW = timedelta(hours=24)
WINDOW_MARGIN = timedelta(minutes=30)
OPTED_OUT_REASON = "opted_out"  # the user sent a stop keyword: nothing is sent until a start keyword
NO_TEMPLATE_REASON = ("outside the 24-hour window and the tenant has no 'reengage' template "
                      "(tenants.yaml templates.reengage)")


def new_message_id(tenant_id: str) -> str:
    """Our Infobip messageId: `<tenant_id>.<uuid>`. Delivery reports carry no sender number, so the prefix is how
    the ingress finds the tenant of a report."""
    return f"{tenant_id}.{uuid.uuid4().hex}"


def tenant_of_message_id(message_id: str) -> str | None:
    head, sep, _ = (message_id or "").partition(".")
    return head if sep and head else None


def client_for(tenant: Tenant) -> InfobipClient:
    return InfobipClient(tenant.infobip_base_url, tenant.infobip_api_key)


PLAYGROUND_STATUS = {"groupName": "DELIVERED", "name": "DELIVERED_TO_PLAYGROUND",
                     "description": "shown in the playground; nothing was sent to WhatsApp"}


class PlaygroundClient:
    """The Infobip of playground users: every call succeeds at once without leaving the process. A send is
    accepted and, since no delivery report will ever come, delivered (`delivers`)."""

    delivers = True

    def send(self, path: str, body: dict) -> SendResult:
        message_id = body.get("messageId") or next(iter(body.get("messages") or [{}])).get("messageId")
        return SendResult(True, None, {"messageId": message_id, "status": dict(PLAYGROUND_STATUS)})

    def mark_read(self, sender: str, message_id: str) -> bool:
        return True

    def typing(self, sender: str, to: str) -> bool:
        return True

    def download_media(self, url: str, *args, **kwargs) -> bytes:
        raise MediaDownloadError("playground messages carry no media")


PLAYGROUND_CLIENT = PlaygroundClient()


def client_for_user(client, playground: bool):
    """The one place that picks who carries a user's messages: `client` (Infobip) for a real user, the
    PlaygroundClient for a playground user (users.playground)."""
    return PLAYGROUND_CLIENT if playground else client


# ---------------------------------------------------------------- queueing

def inside_window(last_inbound_at: datetime | None, now: datetime) -> bool:
    """Whether free text may still be sent: the user wrote less than 23h30m before `now`."""
    if now.tzinfo is None or (last_inbound_at is not None and last_inbound_at.tzinfo is None):
        raise ValueError("the 24-hour window needs timezone-aware datetimes")
    return last_inbound_at is not None and now - last_inbound_at < WINDOW - WINDOW_MARGIN


@dataclass(frozen=True)
class Queued:
    mode: str                   # text | template | not_sent
    row_ids: list[int]          # every outbox row written, in order
    send_ids: list[int]         # the rows whose send tasks go out after the commit


def template_content(tenant: Tenant, template: Template, *, phone: str, message_id: str, text: str,
                     name: str | None) -> dict:
    return template_body(sender=tenant.waba_number, to=phone, message_id=message_id, template_name=template.name,
                         language=template.language,
                         placeholders=render_placeholders(template, text=text, name=name,
                                                          business_name=tenant.config.business_name))


def queue_message(conn: psycopg.Connection, tenant: Tenant, *, user_id: int, phone: str, text: str, now: datetime,
                  last_inbound_at: datetime | None, source_message: int | None = None,
                  reminder_id: int | None = None, request_id: str | None = None,
                  even_opted_out: bool = False) -> Queued:
    """Write the outbox rows of one message (in the caller's transaction): text parts inside the window, the
    `reengage` template outside it, or one `not_sent` row with the reason when the tenant has no template, or when
    the user opted out (reason `opted_out`; every reply, reminder, notice and operator message comes through here,
    so this is the one place that refuses them; `even_opted_out` is for the opt-out's own confirmation)."""
    common = dict(user_id=user_id, to_number=phone, source_message=source_message, reminder_id=reminder_id,
                  request_id=request_id)
    if not even_opted_out and users.state_of(conn, user_id) == users.OPTED_OUT:
        return _not_sent(conn, tenant, phone, text, OPTED_OUT_REASON, common)
    if inside_window(last_inbound_at, now):
        # Order across messages: part 1 waits for the user's newest row Infobip has not accepted yet (read in the
        # caller's transaction; a concurrent transaction may pick the same one: outbound.next_part returns every waiter).
        after = outbound.latest_queued(conn, user_id)
        ids: list[int] = []
        for number, part in enumerate(split_text(text), start=1):
            mid = new_message_id(tenant.tenant_id)
            ids.append(outbound.create(
                conn, message_id=mid, body=part, part=number, prev_id=ids[-1] if ids else after,
                chain_id=ids[0] if ids else None,
                content=text_body(sender=tenant.waba_number, to=phone, text=part, message_id=mid), **common))
        # part 1's task is published; if it must wait, it finds that out under a lock and its predecessor's task
        # publishes it again later. Each later part is published by its predecessor once Infobip accepted it.
        return Queued("text", ids, ids[:1])
    if not text or not text.strip():
        raise ValueError("cannot send an empty text")
    template = reengage_template(tenant)
    mid = new_message_id(tenant.tenant_id)
    if template is None:
        return _not_sent(conn, tenant, phone, text, NO_TEMPLATE_REASON, common)
    user = users.get_user(conn, user_id) or {}
    oid = outbound.create(conn, message_id=mid, body=text, kind="template",
                          prev_id=outbound.latest_queued(conn, user_id),  # in order after earlier messages, too
                          content=template_content(tenant, template, phone=phone, message_id=mid, text=text,
                                                   name=user.get("name")), **common)
    return Queued("template", [oid], [oid])


def _not_sent(conn: psycopg.Connection, tenant: Tenant, phone: str, text: str, reason: str, common: dict) -> Queued:
    """One `not_sent` row recording the message and why it was not sent."""
    oid = outbound.create(conn, message_id=new_message_id(tenant.tenant_id), body=text, status="not_sent",
                          reason=reason, content={"to": phone, "content": {"text": text}}, **common)
    log.warning("message not sent", extra={"outbound_id": oid, "reason": reason[:60]})
    metrics.not_sent("opted_out" if reason == OPTED_OUT_REASON else "no_template", tenant.tenant_id)
    return Queued("not_sent", [oid], [])


def queue_reply(tx: Transaction, *, user_id: int, phone: str, text: str, source_message: int | None,
                request_id: str | None, now: datetime, last_inbound_at: datetime | None) -> list[int]:
    """Write the outbox rows of one reply in `tx` and register their sends for after its commit; returns the ids
    of the rows whose sends were registered."""
    send_ids = queue_message(tx.conn, tx.tenant, user_id=user_id, phone=phone, text=text, now=now,
                             last_inbound_at=last_inbound_at, source_message=source_message,
                             request_id=request_id).send_ids
    tx.send_after_commit(send_ids)
    return send_ids


# ---------------------------------------------------------------- sending

@dataclass(frozen=True)
class SendOutcome:
    status: str                  # sent | failed | retry | waiting | skipped | busy
    delay: float | None = None   # seconds until the retry (status retry) or the re-check (status waiting)
    error: dict | None = None
    message_id: str | None = None  # the row's Infobip messageId, to settle reports that overtook the send
    request_id: str | None = None  # status sent: the row's request id and part (metrics: the turn's latency)
    part: int | None = None


def describe_error(error: InfobipError) -> str:
    """The reason stored on a row, in words: Infobip's code and text, never our credentials."""
    if error.http_status is None:
        return f"Infobip could not be reached ({error.text or error.code})"
    return f"Infobip answered HTTP {error.http_status} {error.code}" + (f": {error.text}" if error.text else "")


def _head(row: dict) -> int:
    """Part 1 of the reply a row belongs to: rows with the same head are one message."""
    return row["chain_id"] or row["id"]


def send_outbound(tenant: Tenant, uow: UnitOfWork, client: InfobipClient, outbound_id: int, *,
                  max_attempts: int = MAX_ATTEMPTS, retry_base: float = DEFAULT_BASE_SECONDS,
                  clock: Callable[[], datetime] = utcnow) -> SendOutcome:
    """Post one outbox row (one HTTP attempt) and record what Infobip said; the rows that waited for it are
    registered on `uow` for after the commit. The caller, after this returns (all committed), settles reports kept
    for the message (shared.delivery.reports) and schedules the retry (status `retry`), or tries again shortly
    (status `busy`: another task holds the row)."""
    with uow.transaction(tenant) as tx:
        conn = tx.conn
        with conn.transaction():
            # never post a row from two tasks at once: a session lock held until the result is recorded
            if not outbound.try_lock(conn, outbound_id):
                return SendOutcome("busy")
        try:
            return _send_locked(tx, client, outbound_id, max_attempts, retry_base, clock)
        finally:
            try:
                outbound.unlock(conn, outbound_id)
                conn.commit()
            except psycopg.Error:
                conn.close()  # the lock ends with the session: never hand a connection holding it back to the pool


# How long a message waits for an earlier message of the same user that Infobip keeps refusing (its retries can
# take 17-34 minutes) before it is sent anyway: order is kept in the normal case, a stuck message holds the rest
# for at most this long.
MAX_ORDER_WAIT = timedelta(seconds=60)


def _order_wait(conn: psycopg.Connection, row: dict, before: dict, now: datetime) -> float | None:
    """Whether `row` still waits for its queued predecessor `before`: seconds until it should look again (0: no
    re-check, the predecessor's task or the sweep publishes it), or None when it goes now (out of order, because
    the predecessor is another message whose posts keep failing and `row` waited MAX_ORDER_WAIT).

    The parts of one reply always wait for each other. A predecessor with no failed post is merely on its way
    (its task is queued, or re-published by the sweep after a lost publish), so the order holds."""
    if _head(before) == _head(row):
        return 0
    if not outbound.has_failed_post(conn, before["id"]):
        return 0
    left = (row["created_at"] + MAX_ORDER_WAIT - now).total_seconds()
    return left if left > 0 else None


def _send_locked(tx: Transaction, client: InfobipClient, outbound_id: int, max_attempts: int,
                 retry_base: float, clock: Callable[[], datetime]) -> SendOutcome:
    conn = tx.conn
    with conn.transaction():  # 1. decide, and count the attempt durably before posting
        row = outbound.get(conn, outbound_id)
        if row is None:
            log.error("outbound message not found", extra={"outbound_id": outbound_id})
            return SendOutcome("skipped")
        if row["status"] != "queued":  # its acceptance (or failure) is recorded: never post it again
            return SendOutcome("skipped", message_id=row["message_id"])
        client = client_for_user(client, users.is_playground(conn, row["user_id"]))
        if _refused_for_opt_out(tx, row):
            return SendOutcome("skipped", message_id=row["message_id"])
        not_before = row.get("next_attempt_at")
        if row["attempts"] and not_before is not None and (not_before - clock()).total_seconds() > 1:
            # A copy of this send's task came early (restored by the broker after its visibility timeout, or
            # re-published by a sweep): the retry schedule and Infobip's Retry-After still hold.
            return SendOutcome("retry", delay=(not_before - clock()).total_seconds())
        if row["prev_id"] is not None:
            before = outbound.predecessor(conn, row["prev_id"])
            if before is not None and before["status"] == "queued":
                wait = _order_wait(conn, row, before, clock())
                if wait is not None:  # the row before it publishes this one once accepted (or failed)
                    return SendOutcome("waiting", delay=wait or None)
                log.warning("sending ahead of an earlier message that keeps failing",
                            extra={"outbound_id": outbound_id, "waited_for": before["id"]})
            if before is not None and before["status"] in ("failed", "not_sent"):
                if _head(before) == _head(row):  # an earlier part of this reply failed: stop the rest of it
                    stopped = outbound.stop_queued_parts(conn, _head(row), row["part"] - 1, "not_sent",
                                                         f"part {row['part'] - 1} of this reply was not sent")
                    tx.send_after_commit(outbound.waiting_on(conn, stopped))
                    return SendOutcome("skipped")
                # an earlier MESSAGE failed: this one is sent anyway (order kept, nothing held back)
        if row["attempts"] >= max_attempts:  # every allowed post was made, the last answers were lost
            return _give_up(tx, row, f"gave up after {row['attempts']} attempts: the answer to the last post was "
                                       "lost (worker stopped or database unreachable); Infobip may have accepted it")
        attempt = outbound.begin_post(conn, outbound_id, row["prev_id"])
        if attempt is None:  # moved on meanwhile by a report, or re-pointed to wait for a template fallback
            if outbound.status_of(conn, outbound_id) == "queued":
                return SendOutcome("waiting")  # its new predecessor publishes it
            return SendOutcome("skipped", message_id=row["message_id"])
    # 2. post, with no transaction open (the advisory lock keeps other tasks off). If the process dies here, or step
    # 3 cannot commit, the row stays `queued` with this attempt counted and is posted again later with the same
    # messageId (at-least-once: whether Infobip drops the repeat is UNKNOWN).
    result = client.send(PATHS[row["kind"]], row["content"])
    with conn.transaction():  # 3. record Infobip's answer and release whoever waited for this row
        if result.ok:
            accepted = _record_accepted(conn, client, outbound_id, result.body)
            tx.send_after_commit(outbound.next_part(conn, outbound_id))  # the next part, later messages of this user
            log.info("sent to infobip", extra={"outbound_id": outbound_id, "infobip_message_id": row["message_id"],
                                               "http_status": result.http_status, "part": row["part"],
                                               "attempt": attempt})
            return SendOutcome("sent", message_id=row["message_id"], request_id=row.get("request_id"),
                               part=row.get("part"))
        return _record_failure(tx, row, attempt, result.error, result.retry_after, max_attempts, retry_base,
                               clock())


def _record_accepted(conn: psycopg.Connection, client, outbound_id: int, body) -> dict:
    """Record the acceptance (and, for the playground, the delivery no report will bring); returns its status."""
    accepted = accepted_status(body)
    outbound.record_accepted(conn, outbound_id, body, accepted.get("groupName"), accepted.get("name"))
    if getattr(client, "delivers", False):
        outbound.record_report(conn, outbound_id, status="delivered", status_group=accepted.get("groupName"),
                               status_name=accepted.get("name"), error=None)
    return accepted


def _refused_for_opt_out(tx: Transaction, row: dict) -> bool:
    """A row queued before its user opted out (or a template fallback written after) is not posted: `not_sent`
    with reason `opted_out`; the rest of its reply is stopped and the rows waiting on it are released. Only the
    opt-out's own confirmation, written in the transaction of the switch (same `now()`), still goes."""
    since = users.opted_out_since(tx.conn, row["user_id"])
    if since is None or row["created_at"] == since or not outbound.refuse(tx.conn, row["id"], OPTED_OUT_REASON):
        return False
    log.warning("message not sent: the user opted out", extra={"outbound_id": row["id"]})
    stopped = outbound.stop_queued_parts(tx.conn, _head(row), row["part"], "not_sent", OPTED_OUT_REASON)
    tx.send_after_commit(outbound.waiting_on(tx.conn, [row["id"], *stopped]))
    return True


def _record_failure(tx: Transaction, row: dict, attempt: int, error: InfobipError,
                    retry_after: float | None, max_attempts: int, retry_base: float, now: datetime) -> SendOutcome:
    final = attempt >= max_attempts or not error.retryable  # `attempt` was counted on the row before the post
    reason = describe_error(error)
    if final and error.retryable:
        reason = f"gave up after {attempt} attempts: {reason}"
    delay = None if final else retry_delay(attempt, retry_after, retry_base)
    status = outbound.record_error(tx.conn, row["id"], error.as_dict(), final=final, reason=reason,
                                   next_attempt_at=None if delay is None else now + timedelta(seconds=delay))
    log.warning("infobip send failed", extra={"outbound_id": row["id"], "infobip_error": error.as_dict(),
                                              "attempt": attempt, "final": final, "retry_in": delay})
    metrics.infobip_error(error.http_status, error.code, tx.tenant.tenant_id)
    if not final:
        metrics.send_retry(tx.tenant.tenant_id)
    if status != "queued" and status != "failed":  # a report says an earlier post was accepted after all
        return SendOutcome("skipped", message_id=row["message_id"])
    if final:
        _release_after_failure(tx, row, reason)
        return SendOutcome("failed", error=error.as_dict(), message_id=row["message_id"])
    return SendOutcome("retry", delay, error.as_dict(), message_id=row["message_id"])


def _give_up(tx: Transaction, row: dict, reason: str) -> SendOutcome:
    if outbound.record_error(tx.conn, row["id"], None, final=True, reason=reason) != "failed":
        return SendOutcome("skipped", message_id=row["message_id"])
    log.warning("infobip send given up", extra={"outbound_id": row["id"], "attempt": row["attempts"]})
    _release_after_failure(tx, row, reason)
    return SendOutcome("failed", message_id=row["message_id"])


def _release_after_failure(tx: Transaction, row: dict, reason: str) -> None:
    """A row failed for good: the rest of its reply is not sent, and the later messages waiting on it (or on those
    parts) are published after the commit rather than by the 10-minute sweep."""
    stopped = outbound.stop_queued_parts(tx.conn, _head(row), row["part"], "not_sent",
                                         f"part {row['part']} of this reply failed: {reason}")
    tx.send_after_commit(outbound.waiting_on(tx.conn, [row["id"], *stopped]))


# A queued send whose task should have run this long ago is published again by the `recover_stalled` sweep (beat,
# every RECOVERY_SWEEP_SECONDS): a send committed during a broker outage whose process was lost goes out within
# about STALLED_SEND_GRACE + one sweep interval of Redis coming back. Short, because a false alarm is cheap: the
# extra task finds the row sent (or locked by the task posting it) and posts nothing.
STALLED_SEND_GRACE = timedelta(seconds=60)


def requeue_stalled(tx: Transaction, now: datetime, grace: timedelta = STALLED_SEND_GRACE) -> int:
    """Queued rows whose send should have happened more than `grace` ago (a publish lost after the commit or during
    a broker outage, a task that crashed): their sends are registered again for after the commit; returns how
    many. Posting stays at most once per accepted message because the send locks the row and posts only `queued`
    rows."""
    stalled = outbound.stalled(tx.conn, now - grace)
    tx.send_after_commit(stalled)
    return len(stalled)
