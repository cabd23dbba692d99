"""Infobip webhooks: authenticate, validate, resolve the tenant, enqueue, answer in milliseconds.

Guarantee: a 2xx means every accepted result is in Redis twice over: as its task, and as a record that stays until
the worker has stored it (shared/queueing/accepted.py), so a task the broker loses is published again:
at-least-once from here on. One Redis round trip per request whatever its size: one script takes the dedupe claims,
writes the records and queues the tasks (shared/queueing/dedupe.py), all or nothing. If Redis cannot take a task the answer is 503 and Infobip delivers the whole batch
again; results already enqueued before the failure are then seen twice, which the workers' deduplication absorbs.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

from flask import Blueprint, Flask, g, jsonify, request
from redis.exceptions import RedisError

from ingress.auth import presented_token, token_matches
from ingress.errors import error_response
from ingress.payload import PayloadError, parse_body, refusal
from ingress.schemas import MAX_RESULTS, EnvelopeSchema, result_kind
from ingress.state import state
from shared import metrics
from shared.queueing import accepted, dedupe
from shared.delivery.outbox import tenant_of_message_id
from shared.queueing.tasks import TASK_APPLY_REPORT, TASK_HANDLE_INBOUND, task_message
from shared.config.tenants import Tenant

log = logging.getLogger("ingress.webhooks")
bp = Blueprint("webhooks", __name__)
_envelope = EnvelopeSchema()


def _authorised_for(token: str | None, tenant: Tenant) -> bool:
    return token_matches(token, state().settings.webhook_verify_token) or token_matches(token, tenant.webhook_token)


def _any_valid(token: str | None) -> bool:
    st = state()
    return token_matches(token, st.settings.webhook_verify_token) or any(
        token_matches(token, t.webhook_token) for t in st.tenants)


def _tenant_for(result: dict, kind: str) -> Tenant | None:
    tenants = state().tenants
    if kind == "inbound":
        return tenants.by_number(result.get("to", ""))
    tenant_id = tenant_of_message_id(result.get("messageId", ""))
    return tenants.get(tenant_id) if tenant_id else None


class _Refused(Exception):
    """The whole batch is refused: nothing of it is taken, so Infobip's retry of it is not a duplicate."""

    def __init__(self, response):
        super().__init__()
        self.response = response


def _queue_unavailable(exc: Exception):
    metrics.enqueue_failed("webhook")
    log.error("queue unavailable, webhook not acknowledged", extra={"error": exc.__class__.__name__})
    return error_response(503, "queue_unavailable", "the work queue is unreachable; retry later")


@dataclass
class _Batch:
    """What one webhook request takes: the tasks to publish (each with its dedupe claim key, or None for a report,
    whose application is idempotent), then how many were taken, ignored and duplicates."""

    jobs: list[tuple[str, dict, str | None]] = field(default_factory=list)
    taken: int = 0
    ignored: int = 0
    duplicates: int = 0


def _take(batch: _Batch, result: dict, kind: str, tenant: Tenant) -> None:
    """Add one result of `tenant` to the batch: an inbound message under its (tenant, messageId) claim, a report
    always."""
    payload = {"tenant_id": tenant.tenant_id, "request_id": g.request_id, "message_id": result["messageId"]}
    if kind != "inbound":
        batch.jobs.append((TASK_APPLY_REPORT, {**payload, "kind": kind, "report": result}, None))
        return
    # received_at: when the turn latency starts (shared/metrics.py remember_receipt, first_send)
    batch.jobs.append((TASK_HANDLE_INBOUND, {**payload, "result": result, "received_at": g.received_at},
                       dedupe.key(tenant.tenant_id, result["messageId"])))


def _sort(results: list[dict], allowed_kinds: tuple[str, ...], token: str | None) -> _Batch:
    """Each result to its tenant's task, or ignored (no tenant has its number); raises _Refused for a result this
    URL does not take or credentials of another tenant. Nothing touches Redis yet."""
    batch = _Batch()
    for result in results:
        kind = result_kind(result)
        if kind not in allowed_kinds:
            raise _Refused(error_response(400, "invalid_payload", f"{kind} results are not accepted on this URL"))
        tenant = _tenant_for(result, kind)
        if tenant is None:
            batch.ignored += 1
            log.info("webhook result for no tenant ignored", extra={
                "kind": kind, "to": result.get("to"), "infobip_message_id": result.get("messageId")})
            continue
        if not _authorised_for(token, tenant):
            log.warning("webhook refused: credentials of another tenant", extra={"tenant_id": tenant.tenant_id})
            raise _Refused(error_response(401, "unauthorized", "credentials are not valid for this number"))
        _take(batch, result, kind, tenant)
    return batch


def _undo(redis, items: list[tuple[accepted.Accepted, str | None, str]]) -> None:
    """After a failure: release the claims (so Infobip's retry of this batch is not taken for a duplicate) and
    forget the records. If Redis cannot take even that, the records stay and the sweep publishes their tasks."""
    dedupe.release_quietly(redis, [claim for _item, claim, _message in items if claim])
    accepted.forget_quietly(redis, [item.task_id for item, _claim, _message in items])


def _publish(batch: _Batch, redis) -> None:
    """Claim, record and queue every task in one atomic script (shared/queueing/dedupe.py claim_record_push). The
    records are forgotten by the worker once done: what we answer 2xx for is re-driven if the broker loses it
    (shared/queueing/accepted.py). Raises _Refused (503) when Redis does not take it, after undoing."""
    celery = state().celery
    items = []
    for task_name, payload, claim in batch.jobs:
        task_id = str(uuid.uuid4())
        queue, message = task_message(celery, task_name, payload, task_id)
        items.append((accepted.Accepted(task_id, task_name, queue, payload), claim, message))
    try:
        flags = dedupe.claim_record_push(redis, items, time.time(), state().settings.accepted_redrive_seconds)
    except (RedisError, OSError) as exc:
        _undo(redis, items)
        raise _Refused(_queue_unavailable(exc)) from None
    for (item, _claim, _message), taken in zip(items, flags):
        if taken:
            batch.taken += 1
            log.info("webhook result enqueued", extra={"tenant_id": item.payload["tenant_id"], "task": item.task,
                                                       "message_id": item.payload["message_id"]})
        else:
            batch.duplicates += 1
            log.info("duplicate webhook result ignored", extra={"tenant_id": item.payload["tenant_id"],
                                                                "message_id": item.payload["message_id"]})


def _receive(allowed_kinds: tuple[str, ...]):
    g.received_at = round(time.time(), 3)
    token = presented_token(request)
    if not _any_valid(token):
        log.warning("webhook refused: bad credentials", extra={"remote": request.remote_addr})
        return error_response(401, "unauthorized", "missing or invalid webhook credentials")

    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    try:
        body = parse_body(raw)  # UTF-8 JSON, bounded depth, every string storable (ingress/payload.py)
    except PayloadError as exc:
        log.info("webhook refused: unreadable body", extra={"error": exc.error, "reason": exc.message})
        return error_response(400, exc.error, exc.message, exc.details())
    refused = refusal(body, _envelope, MAX_RESULTS)  # types, numbers, times and batch size workers can take
    if refused is not None:
        return error_response(400, "invalid_payload", "the body is not an Infobip webhook envelope", refused)

    redis = state().redis
    try:
        batch = _sort(body["results"], allowed_kinds, token)
        _publish(batch, redis)
    except _Refused as refusal_:
        return refusal_.response
    metrics.webhook_results("inbound" if "inbound" in allowed_kinds else "reports", batch.taken,
                            batch.duplicates, batch.ignored)
    return jsonify({"accepted": batch.taken, "ignored": batch.ignored, "duplicates": batch.duplicates,
                    "request_id": g.request_id}), 200


@bp.post("/webhooks/infobip")
def infobip_webhook():
    """Inbound messages (and reports too, when one URL is configured for everything in Infobip)."""
    return _receive(("inbound", "delivery", "seen"))


@bp.post("/webhooks/infobip/status")
def infobip_status_webhook():
    """Delivery and seen reports."""
    return _receive(("delivery", "seen"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
