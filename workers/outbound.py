"""Infobip sends (queue `outbound`). Retries keep the same outbox row and so the same Infobip messageId.

The retry waits in the broker (`self.retry(countdown=...)`), not in a sleeping worker thread: a blocking retry
library such as tenacity would hold a thread of the pool for the whole backoff. The number of posts is bounded on
the row itself (shared.infobip.retry.MAX_ATTEMPTS); Celery's max_retries is only a backstop above it.
"""
from __future__ import annotations

import psycopg

from shared.infobip.retry import MAX_ATTEMPTS, retry_base_seconds
from shared.outbox import enqueue_sends, send_outbound
from shared.reports import settle_after_send
from shared.taskqueue import QUEUE_OUTBOUND, TASK_SEND
from workers.app import app
from workers.base import WabotTask, backoff
from workers.runtime import get_runtime

RETRY_BASE_SECONDS = retry_base_seconds()  # INFOBIP_RETRY_BASE_SECONDS, validated when the worker starts


@app.task(name=TASK_SEND, queue=QUEUE_OUTBOUND, base=WabotTask, bind=True, max_retries=MAX_ATTEMPTS + 2)
def send(self, payload: dict) -> str:
    rt = get_runtime()
    tenant = rt.tenants.require(payload["tenant_id"])
    try:
        outcome = send_outbound(tenant, rt.pools, rt.infobip(tenant), int(payload["outbound_id"]),
                                retry_base=RETRY_BASE_SECONDS)
        follow = list(outcome.enqueue)
        if outcome.message_id and outcome.status in ("sent", "failed", "skipped"):
            follow += settle_after_send(tenant, rt.pools, outcome.message_id)
    except psycopg.OperationalError as exc:  # the tenant database is away: the row is untouched, try later
        raise self.retry(countdown=backoff(self.request.retries, RETRY_BASE_SECONDS, 300), exc=exc)
    # committed above: the next part of the reply, or a template fallback
    enqueue_sends(app, tenant.tenant_id, follow, payload.get("request_id"), message_id=payload.get("message_id"))
    if outcome.status == "retry":
        raise self.retry(countdown=outcome.delay)
    return outcome.status
