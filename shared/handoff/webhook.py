"""The business's webhook: told of every handoff and hand-back, signed, retried, each attempt recorded.

The request: `POST <handoff.webhook_url>` with a JSON body (`event`, `tenant_id`, `event_id`, `actor`, `reason`,
`at`, `user: {id, phone, name}`, `state`) and the headers
- `X-Wabot-Timestamp`: Unix seconds when this attempt was signed;
- `X-Wabot-Signature`: `sha256=` + hex HMAC-SHA256, keyed with `handoff.webhook_secret`, of
  `<timestamp>.<body bytes>`. A receiver recomputes it over the raw body and rejects old timestamps (replays).
Sent through the outbound request guard (shared.tools.netguard): no private addresses unless the tenant sets
`handoff.allow_private_network`, no redirects to other hosts, a deadline, a capped answer. A 2xx answer delivers
the event; anything else is recorded and retried with backoff (the task, workers/outbound.py) up to MAX_ATTEMPTS.
At-least-once: a receiver may see an event twice (same `event_id`) when an answer is lost.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass

from shared.config.tenants import Tenant
from shared.db import conversation_events
from shared.db.unit_of_work import UnitOfWork
from shared.tools.netguard import FetchError, fetch

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Wabot-Signature"
TIMESTAMP_HEADER = "X-Wabot-Timestamp"
MAX_ATTEMPTS = 8
TIMEOUT_SECONDS = 10.0
MAX_ANSWER_BYTES = 16 * 1024


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def event_body(tenant: Tenant, event: dict) -> bytes:
    """The JSON body telling the business about one event (a row of conversation_events.get_with_user)."""
    return json.dumps({
        "event": event["kind"], "tenant_id": tenant.tenant_id, "event_id": event["id"], "actor": event["actor"],
        "reason": event["reason"], "at": event["created_at"].isoformat(), "state": event["state"],
        "user": {"id": event["user_id"], "phone": event["phone"], "name": event["name"]},
    }, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


@dataclass(frozen=True)
class WebhookOutcome:
    status: str          # delivered | retry | failed | skipped
    attempt: int = 0


def _post(tenant: Tenant, body: bytes) -> tuple[int | None, str | None]:
    """(HTTP status, error in words): the error never holds the URL or the secret."""
    settings = tenant.handoff
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
               SIGNATURE_HEADER: sign(settings.webhook_secret, timestamp, body)}
    try:
        answer = fetch("POST", settings.webhook_url, headers=headers, data=body, timeout=TIMEOUT_SECONDS,
                       max_bytes=MAX_ANSWER_BYTES, allow_private=settings.allow_private_network, max_redirects=0)
    except FetchError as exc:
        return exc.status, str(exc)
    return answer.status, None if 200 <= answer.status < 300 else f"the webhook answered HTTP {answer.status}"


def deliver(tenant: Tenant, uow: UnitOfWork, event_id: int, max_attempts: int = MAX_ATTEMPTS) -> WebhookOutcome:
    """One attempt to tell the business about `event_id`, recorded; no transaction is open during the post."""
    if not tenant.handoff.webhook_url:
        return WebhookOutcome("skipped")
    with uow.transaction(tenant) as tx:
        if conversation_events.delivered(tx.conn, event_id):
            return WebhookOutcome("skipped")  # a redelivered task: the business has it
        event = conversation_events.get_with_user(tx.conn, event_id)
    if event is None:
        return WebhookOutcome("skipped")
    status, error = _post(tenant, event_body(tenant, event))
    with uow.transaction(tenant) as tx:
        attempt = conversation_events.record_attempt(tx.conn, event_id, ok=error is None, http_status=status,
                                                     error=error)
    if error is None:
        log.info("handoff webhook delivered", extra={"event_id": event_id, "attempt": attempt})
        return WebhookOutcome("delivered", attempt)
    final = attempt >= max_attempts
    log.warning("handoff webhook failed", extra={"event_id": event_id, "attempt": attempt, "final": final,
                                                 "http_status": status, "error": error})
    return WebhookOutcome("failed" if final else "retry", attempt)
