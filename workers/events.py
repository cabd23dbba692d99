"""Delivery and seen reports (queue `events`): idempotent updates of the outbox row they name.

A report for a message we do not know yet is kept (pending_reports) and applied when its send records its
result: nothing is dropped, and no worker waits for it.
"""
from __future__ import annotations

import psycopg

from shared.outbox import enqueue_sends
from shared.reports import receive_report
from shared.taskqueue import QUEUE_EVENTS, TASK_APPLY_REPORT
from workers.app import app
from workers.base import WabotTask, backoff
from workers.runtime import get_runtime


@app.task(name=TASK_APPLY_REPORT, queue=QUEUE_EVENTS, base=WabotTask, bind=True, max_retries=5)
def apply_report(self, payload: dict) -> bool:
    rt = get_runtime()
    tenant = rt.tenants.require(payload["tenant_id"])
    try:
        outcome = receive_report(tenant, rt.pools, payload["kind"], payload["report"])
    except psycopg.OperationalError as exc:  # the tenant database is away: nothing was written, try later
        raise self.retry(countdown=backoff(self.request.retries), exc=exc)
    enqueue_sends(app, tenant.tenant_id, outcome.enqueue, payload.get("request_id"))  # fallbacks, committed
    return outcome.found
