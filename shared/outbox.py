"""The outbox: what we send a user, stored first, then posted to Infobip in order and with bounded retries.

Guarantees:
- a send row is committed before its task is enqueued (nothing is sent that was not stored);
- the row is locked while it is posted and only a `queued` row is posted, so a redelivered or re-published send
  task never posts a message Infobip already accepted; retries reuse the row and therefore the same messageId;
- the parts of a long reply are posted in order: part n+1 is posted only after Infobip accepted part n (its task
  waits; part n's task publishes it after the acceptance is committed); a part that fails stops the rest;
- outside the 24-hour window (with a safety margin) a message goes out as the tenant's `reengage` template, or is
  recorded `not_sent` with the reason when the tenant has none.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

import psycopg
from celery import Celery

from shared.clock import utcnow
from shared.db import repo
from shared.db.pools import TenantPools
from shared.infobip.client import TEMPLATE_PATH, TEXT_PATH, InfobipClient, template_body, text_body
from shared.infobip.errors import InfobipError
from shared.infobip.retry import DEFAULT_BASE_SECONDS, MAX_ATTEMPTS, retry_delay
from shared.infobip.split import split_text
from shared.infobip.templates import Template, reengage_template, render_placeholders
from shared.taskqueue import TASK_SEND, enqueue
from shared.tenants import Tenant

log = logging.getLogger(__name__)

PATHS = {
    "text": TEXT_PATH,
    "template": TEMPLATE_PATH,
    "buttons": "/whatsapp/1/message/interactive/buttons",
}
# WhatsApp delivers free text only within 24 hours of the user's last message; we stop 30 minutes early so a
# message queued at 23h59 is not refused on arrival.
WINDOW = timedelta(hours=24)
WINDOW_MARGIN = timedelta(minutes=30)
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
    send_ids: list[int]         # the rows whose send tasks the caller publishes after its commit


def template_content(tenant: Tenant, template: Template, *, phone: str, message_id: str, text: str,
                     name: str | None) -> dict:
    return template_body(sender=tenant.waba_number, to=phone, message_id=message_id, template_name=template.name,
                         language=template.language,
                         placeholders=render_placeholders(template, text=text, name=name,
                                                          business_name=tenant.config.business_name))


def queue_message(conn: psycopg.Connection, tenant: Tenant, *, user_id: int, phone: str, text: str, now: datetime,
                  last_inbound_at: datetime | None, source_message: int | None = None,
                  reminder_id: int | None = None, request_id: str | None = None) -> Queued:
    """Write the outbox rows of one message (in the caller's transaction): text parts inside the window, the
    `reengage` template outside it, or one `not_sent` row with the reason when the tenant has no template."""
    common = dict(user_id=user_id, to_number=phone, source_message=source_message, reminder_id=reminder_id,
                  request_id=request_id)
    if inside_window(last_inbound_at, now):
        ids: list[int] = []
        for number, part in enumerate(split_text(text), start=1):
            mid = new_message_id(tenant.tenant_id)
            ids.append(repo.create_outbound(
                conn, message_id=mid, body=part, part=number, prev_id=ids[-1] if ids else None,
                chain_id=ids[0] if ids else None,
                content=text_body(sender=tenant.waba_number, to=phone, text=part, message_id=mid), **common))
        # only part 1 can go now; each later part is published by its predecessor once Infobip accepted it
        return Queued("text", ids, ids[:1])
    if not text or not text.strip():
        raise ValueError("cannot send an empty text")
    template = reengage_template(tenant)
    mid = new_message_id(tenant.tenant_id)
    if template is None:
        oid = repo.create_outbound(conn, message_id=mid, body=text, status="not_sent", reason=NO_TEMPLATE_REASON,
                                   content={"to": phone, "content": {"text": text}}, **common)
        log.warning("message not sent: window closed and no template", extra={"outbound_id": oid})
        return Queued("not_sent", [oid], [])
    user = repo.outbound_user(conn, user_id) or {}
    oid = repo.create_outbound(conn, message_id=mid, body=text, kind="template",
                               content=template_content(tenant, template, phone=phone, message_id=mid, text=text,
                                                        name=user.get("name")), **common)
    return Queued("template", [oid], [oid])


def queue_reply(conn: psycopg.Connection, tenant: Tenant, *, user_id: int, phone: str, text: str,
                source_message: int | None, request_id: str | None, now: datetime,
                last_inbound_at: datetime | None) -> list[int]:
    """Write the outbox rows of one reply; returns the ids to publish with `enqueue_sends` after the commit."""
    return queue_message(conn, tenant, user_id=user_id, phone=phone, text=text, now=now,
                         last_inbound_at=last_inbound_at, source_message=source_message,
                         request_id=request_id).send_ids


def enqueue_sends(celery_app: Celery, tenant_id: str, outbound_ids: list[int], request_id: str | None,
                  *, message_id: str | None = None) -> None:
    """Publish one send task per committed outbox row. Raises (kombu OperationalError) when Redis cannot take them;
    rows left unpublished are re-published by the stalled-send sweep (`workers.scheduled`)."""
    for outbound_id in outbound_ids:
        payload = {"tenant_id": tenant_id, "outbound_id": int(outbound_id), "request_id": request_id}
        if message_id:
            payload["message_id"] = message_id
        enqueue(celery_app, TASK_SEND, payload)


# ---------------------------------------------------------------- sending

@dataclass(frozen=True)
class SendOutcome:
    status: str                  # sent | failed | retry | waiting | skipped
    delay: float | None = None   # seconds until the retry (status retry)
    error: dict | None = None
    enqueue: list[int] = field(default_factory=list)  # rows to publish now (the next part)
    message_id: str | None = None  # the row's Infobip messageId, to settle reports that overtook the send


def describe_error(error: InfobipError) -> str:
    """The reason stored on a row, in words: Infobip's code and text, never our credentials."""
    if error.http_status is None:
        return f"Infobip could not be reached ({error.text or error.code})"
    return f"Infobip answered HTTP {error.http_status} {error.code}" + (f": {error.text}" if error.text else "")


def send_outbound(tenant: Tenant, pools: TenantPools, client: InfobipClient, outbound_id: int, *,
                  max_attempts: int = MAX_ATTEMPTS, retry_base: float = DEFAULT_BASE_SECONDS,
                  clock: Callable[[], datetime] = utcnow) -> SendOutcome:
    """Post one outbox row (one HTTP attempt) and record what Infobip said. The caller, after this commit,
    settles reports kept for the message (shared.reports), publishes `enqueue` and schedules the retry."""
    with pools.connection(tenant) as conn:
        row = repo.lock_outbound(conn, outbound_id)
        if row is None:
            log.error("outbound message not found", extra={"outbound_id": outbound_id})
            return SendOutcome("skipped")
        if row["status"] != "queued":  # already accepted by Infobip (or given up): never post twice
            return SendOutcome("skipped", message_id=row["message_id"])
        if row["prev_id"] is not None:
            before = repo.outbound_status(conn, row["prev_id"])
            if before == "queued":
                return SendOutcome("waiting")  # part n-1's task publishes this part once Infobip accepted it
            if before in ("failed", "not_sent"):
                repo.stop_queued_parts(conn, row["chain_id"], row["part"] - 1, "not_sent",
                                       f"part {row['part'] - 1} of this reply was not sent")
                return SendOutcome("skipped")
        result = client.send(PATHS[row["kind"]], row["content"])
        if result.ok:
            repo.record_send_accepted(conn, outbound_id, result.body)
            follow = repo.next_part(conn, outbound_id)
            log.info("sent to infobip", extra={"outbound_id": outbound_id, "infobip_message_id": row["message_id"],
                                               "http_status": result.http_status, "part": row["part"]})
            return SendOutcome("sent", enqueue=[follow] if follow else [], message_id=row["message_id"])
        return _record_failure(conn, row, result.error, result.retry_after, max_attempts, retry_base, clock())


def _record_failure(conn: psycopg.Connection, row: dict, error: InfobipError, retry_after: float | None,
                    max_attempts: int, retry_base: float, now: datetime) -> SendOutcome:
    attempt = row["attempts"] + 1  # counted on the row, so a re-published task cannot reset the bound
    final = attempt >= max_attempts or not error.retryable
    reason = describe_error(error)
    if final and error.retryable:
        reason = f"gave up after {attempt} attempts: {reason}"
    delay = None if final else retry_delay(attempt, retry_after, retry_base)
    repo.record_send_error(conn, row["id"], error.as_dict(), final=final, reason=reason,
                           next_attempt_at=None if delay is None else now + timedelta(seconds=delay))
    if final:
        repo.stop_queued_parts(conn, row["chain_id"] or row["id"], row["part"], "not_sent",
                               f"part {row['part']} of this reply failed: {reason}")
    log.warning("infobip send failed", extra={"outbound_id": row["id"], "infobip_error": error.as_dict(),
                                              "attempt": attempt, "final": final, "retry_in": delay})
    return SendOutcome("failed" if final else "retry", delay, error.as_dict(), message_id=row["message_id"])


def requeue_stalled(conn: psycopg.Connection, now: datetime, grace: timedelta = timedelta(minutes=10)) -> list[int]:
    """Queued rows whose send should have happened more than `grace` ago (a publish lost after the commit, a task
    that crashed): returns their ids to publish again after the commit. Posting stays at most once per accepted
    message because the send locks the row and posts only `queued` rows."""
    return repo.stalled_outbound(conn, now - grace)
