"""Delivery and seen reports (queue `events`): idempotent updates of the outbox row they name.

A report for a message we do not know yet is kept (pending_reports) and applied when its send records its
result: nothing is dropped, and no worker waits for it.

Guarantee: a report is not dropped while its tenant database is away. Applying it is idempotent, so the task is
retried without limit (max_retries=None), with a full-jitter backoff capped at 4 minutes: an outage of any length
delays reports by at most about 4 minutes after it ends.
"""
from __future__ import annotations

import logging

import psycopg

from shared.delivery.outbox import enqueue_sends
from shared.delivery.reports import receive_report
from shared.queueing.tasks import QUEUE_EVENTS, TASK_APPLY_REPORT
from workers.app import app
from workers.base import RETRY_CAP_SECONDS, WabotTask, backoff
from workers.runtime import get_runtime

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 2.0


def retry_delay(retries: int) -> float:
    """Seconds before the next try: full jitter up to min(RETRY_CAP_SECONDS, 2 s * 2^retries); the exponent is capped too, so
    the thousandth retry of a days-long outage computes a wait like the tenth."""
    return backoff(min(retries, 16), RETRY_BASE_SECONDS, RETRY_CAP_SECONDS)


@app.task(name=TASK_APPLY_REPORT, queue=QUEUE_EVENTS, base=WabotTask, bind=True, max_retries=None,
          confirms_accepted=True)
def apply_report(self, payload: dict) -> bool:
    rt = get_runtime()
    tenant = rt.tenants.require(payload["tenant_id"])
    try:
        outcome = receive_report(tenant, rt.pools, payload["kind"], payload["report"])
    except psycopg.OperationalError as exc:  # the tenant database is away; applying again is idempotent
        delay = retry_delay(self.request.retries)
        log.warning("report not applied yet: tenant database unreachable",
                    extra={"retries": self.request.retries, "retry_in": round(delay, 3),
                           "error": exc.__class__.__name__})
        raise self.retry(countdown=delay, exc=exc)
    enqueue_sends(app, tenant.tenant_id, outcome.enqueue, payload.get("request_id"))  # fallbacks, committed
    return outcome.found
