"""Infobip webhooks: authenticate, validate, resolve the tenant, enqueue, answer in milliseconds.

Guarantee: a 2xx means every accepted result is in Redis twice over: as its task, and as a record that stays until
the worker has stored it (shared/queueing/accepted.py), so a task the broker loses is published again:
at-least-once from here on. If Redis cannot take a task the answer is 503 and Infobip delivers the whole batch
again; results already enqueued before the failure are then seen twice, which the workers' deduplication absorbs.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

from flask import Blueprint, Flask, g, jsonify, request
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from ingress.auth import presented_token, token_matches
from ingress.errors import error_response
from ingress.payload import PayloadError, parse_body, refusal
from ingress.schemas import MAX_RESULTS, EnvelopeSchema, result_kind
from ingress.state import state
from shared.queueing import accepted, dedupe
from shared.delivery.outbox import tenant_of_message_id
from shared.queueing.tasks import TASK_APPLY_REPORT, TASK_HANDLE_INBOUND, TASK_QUEUES, enqueue
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
    log.error("queue unavailable, webhook not acknowledged", extra={"error": exc.__class__.__name__})
    return error_response(503, "queue_unavailable", "the work queue is unreachable; retry later")


@dataclass
class _Batch:
    """What one webhook request takes: the tasks to publish, the dedupe claims they hold, and the counts."""

    jobs: list[tuple[str, dict]] = field(default_factory=list)
    claims: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0
    duplicates: int = 0


def _take(batch: _Batch, result: dict, kind: str, tenant: Tenant, redis) -> None:
    """Add one result of `tenant` to the batch: an inbound message once per messageId (the Redis claim), a report
    always (applying one is idempotent). Raises _Refused when Redis cannot take the claim."""
    payload = {"tenant_id": tenant.tenant_id, "request_id": g.request_id, "message_id": result["messageId"]}
    if kind != "inbound":
        batch.jobs.append((TASK_APPLY_REPORT, {**payload, "kind": kind, "report": result}))
        return
    try:
        first = dedupe.claim(redis, tenant.tenant_id, result["messageId"])
    except RedisError as exc:
        raise _Refused(_queue_unavailable(exc)) from None
    if not first:
        batch.duplicates += 1
        log.info("duplicate webhook result ignored", extra={"tenant_id": tenant.tenant_id,
                                                            "message_id": result["messageId"]})
        return
    batch.claims.append((tenant.tenant_id, result["messageId"]))
    batch.jobs.append((TASK_HANDLE_INBOUND, {**payload, "result": result}))


def _sort(results: list[dict], allowed_kinds: tuple[str, ...], token: str | None, redis) -> _Batch:
    """Each result to its tenant's task, or ignored (no tenant has its number); raises _Refused for a result this
    URL does not take or credentials of another tenant (after releasing the claims taken so far)."""
    batch = _Batch()
    try:
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
            _take(batch, result, kind, tenant, redis)
    except _Refused:
        dedupe.release_quietly(redis, batch.claims)
        raise
    return batch


def _publish(batch: _Batch, redis) -> None:
    """Record, publish, confirm. The records come first and are forgotten by the worker once done: what we answer
    2xx for is re-driven if the broker loses it (shared/queueing/accepted.py). Raises _Refused (503) when Redis
    cannot take it all, after releasing the claims and the records."""
    records = [accepted.Accepted(str(uuid.uuid4()), task_name, TASK_QUEUES[task_name], payload)
               for task_name, payload in batch.jobs]
    try:
        accepted.record(redis, records, time.time(), state().settings.accepted_redrive_seconds)
        for item in records:
            enqueue(state().celery, item.task, item.payload, task_id=item.task_id)
        dedupe.confirm(redis, batch.claims)
    except (KombuOperationalError, RedisError, OSError) as exc:
        dedupe.release_quietly(redis, batch.claims)  # so Infobip's retry of this batch is not taken for a duplicate
        accepted.forget_quietly(redis, [item.task_id for item in records])
        raise _Refused(_queue_unavailable(exc)) from None
    for task_name, payload in batch.jobs:
        log.info("webhook result enqueued", extra={"tenant_id": payload["tenant_id"], "task": task_name,
                                                   "message_id": payload["message_id"]})


def _receive(allowed_kinds: tuple[str, ...]):
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
        batch = _sort(body["results"], allowed_kinds, token, redis)
        _publish(batch, redis)
    except _Refused as refusal_:
        return refusal_.response
    return jsonify({"accepted": len(batch.jobs), "ignored": batch.ignored, "duplicates": batch.duplicates,
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
