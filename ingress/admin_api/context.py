"""What the admin API holds per app: a pool per tenant database, the publisher of what its transactions commit
(the same Celery app and Redis the webhooks publish through), and the rate limiter."""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from flask import current_app
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from ingress.state import state
from shared.db.pools import TenantPools
from shared.db.unit_of_work import Publication, UnitOfWork
from shared.queueing import accepted
from shared.queueing.publisher import RetryingPublisher
from shared.queueing.redis_conn import limits_url
from shared.queueing.tasks import TASK_QUEUES, enqueue

log = logging.getLogger("ingress.admin_api")

OPERATOR_RATE = parse("300/minute")     # per operator: a person clicking, or a dashboard polling
FAILED_AUTH_RATE = parse("120/minute")  # per tenant and client address: bad tokens


@dataclass
class AdminContext:
    pools: TenantPools
    publisher: RetryingPublisher
    limiter: MovingWindowRateLimiter


def make_context(redis_url: str, celery) -> AdminContext:
    publisher = RetryingPublisher(lambda task, payload, countdown: enqueue(celery, task, payload, countdown))
    return AdminContext(TenantPools(min_size=0, max_size=4, timeout=10.0), publisher,
                        MovingWindowRateLimiter(storage_from_string(limits_url(redis_url))))


def admin_context() -> AdminContext:
    return current_app.extensions["wabot.admin"]


def publish(publication: Publication) -> None:
    """Publish what an API transaction committed. A tracked task (a turn) is recorded as accepted work first, like
    the workers do (workers/base.py), so the sweep re-drives it if it vanishes; when Redis refuses, it is kept and
    retried in the background (and is durable in Postgres for the recovery sweep anyway)."""
    st = state()
    if publication.tracked:
        item = accepted.Accepted(str(uuid.uuid4()), publication.task, TASK_QUEUES[publication.task],
                                 publication.payload)
        try:
            accepted.record(st.redis, [item], time.time(), st.settings.accepted_redrive_seconds)
            enqueue(st.celery, publication.task, publication.payload, publication.countdown, task_id=item.task_id)
            return
        except Exception as exc:
            log.warning("tracked publish failed; retried in the background", extra={"error": exc.__class__.__name__})
    admin_context().publisher.publish(publication.task, publication.payload, publication.countdown)


def unit_of_work(request_id: str | None) -> UnitOfWork:
    return UnitOfWork(admin_context().pools, publish, request_id=request_id)


def within_rate(limit, *key: str) -> bool:
    """True unless `key` went past `limit`; a limiter outage lets the request through (like the turn limiter)."""
    try:
        return admin_context().limiter.hit(limit, "admin", *key)
    except Exception as exc:
        log.warning("admin rate limiter unavailable: request let through", extra={"error": exc.__class__.__name__})
        return True
