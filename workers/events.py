"""Delivery and seen reports (queue `events`): idempotent updates of the outbox row they name.

A report for a message we do not know yet is kept (pending_reports) and applied when its send records its
result: nothing is dropped, and no worker waits for it.

Guarantee: a report is not dropped while its tenant database is away. Applying it is idempotent, so the task is
retried without limit (max_retries=None), with a full-jitter backoff capped at 4 minutes (workers.base): an outage
of any length delays reports by at most about 4 minutes after it ends.
"""
from __future__ import annotations

import psycopg

from shared.delivery.reports import receive_report
from shared.queueing.tasks import QUEUE_EVENTS, TASK_APPLY_REPORT
from workers.app import app
from workers.base import WabotTask
from workers.runtime import get_runtime


@app.task(name=TASK_APPLY_REPORT, queue=QUEUE_EVENTS, base=WabotTask, bind=True, max_retries=None,
          confirms_accepted=True, retry_on=(psycopg.OperationalError,))
def apply_report(self, payload: dict) -> bool:
    """Apply the report (template fallbacks go out after the commit); False when it was kept for later."""
    tenant = get_runtime().tenants.require(payload["tenant_id"])
    return receive_report(tenant, self.uow, payload["kind"], payload["report"])
