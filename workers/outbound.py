"""Infobip sends (queue `outbound`). Retries keep the same outbox row and so the same Infobip messageId.

The retry waits in the broker (`self.retry(countdown=...)`), not in a sleeping worker thread: a blocking retry
library such as tenacity would hold a thread of the pool for the whole backoff.

Bounds: the number of POSTS of a row is bounded on the row itself (shared.delivery.infobip.retry.MAX_ATTEMPTS, counted
before each post), so Celery's own retry count is not the bound and is unlimited: the other retries post nothing
(the tenant database is away: capped backoff up to 5 minutes, for as long as the outage lasts; another task is
posting this row right now: a short wait, then that task's recorded result is seen).
"""
from __future__ import annotations

import psycopg

from shared import metrics

from shared.delivery.infobip.retry import retry_base_seconds
from shared.delivery.outbox import send_outbound
from shared.delivery.reports import settle_after_send
from shared.handoff.webhook import deliver as deliver_webhook
from shared.queueing.tasks import QUEUE_OUTBOUND, TASK_NOTIFY_HANDOFF, TASK_SEND
from workers.app import app
from workers.base import WabotTask, backoff, worker_redis
from workers.runtime import get_runtime

RETRY_BASE_SECONDS = retry_base_seconds()  # INFOBIP_RETRY_BASE_SECONDS, validated when the worker starts
BUSY_RETRY_CAP_SECONDS = 30.0   # longer than a post takes (connect 5 s + read 30 s) only after a few tries


@app.task(name=TASK_SEND, queue=QUEUE_OUTBOUND, base=WabotTask, bind=True, max_retries=None,
          # The tenant database is away. Either nothing was posted, or the post's answer could not be recorded:
          # the row is still `queued` with that attempt counted, and the retry posts it again (same messageId).
          retry_on=(psycopg.OperationalError,), retry_base=RETRY_BASE_SECONDS, retry_cap=300.0)
def send(self, payload: dict) -> str:
    """Post one outbox row; the rows that waited for it (next part, later messages) and template fallbacks of
    reports that overtook it go out after the commit."""
    rt = get_runtime()
    tenant = rt.tenants.require(payload["tenant_id"])
    outcome = send_outbound(tenant, self.uow, rt.infobip(tenant), int(payload["outbound_id"]),
                            retry_base=RETRY_BASE_SECONDS)
    metrics.send(outcome.status, tenant.tenant_id)
    if outcome.status == "sent" and outcome.part == 1:  # the first part of a reply: the turn's latency ends here
        metrics.first_send(worker_redis(), tenant.tenant_id, outcome.request_id)
    if outcome.message_id and outcome.status in ("sent", "failed", "skipped"):
        settle_after_send(tenant, self.uow, outcome.message_id)
    if outcome.status == "retry" or (outcome.status == "waiting" and outcome.delay):
        # waiting with a delay: an earlier message keeps failing; look again when this one has waited long enough
        raise self.retry(countdown=outcome.delay)
    if outcome.status == "busy":  # another task is posting this row: look again once it has recorded the result
        raise self.retry(countdown=backoff(self.request.retries, RETRY_BASE_SECONDS, BUSY_RETRY_CAP_SECONDS))
    return outcome.status


@app.task(name=TASK_NOTIFY_HANDOFF, queue=QUEUE_OUTBOUND, base=WabotTask, bind=True, max_retries=None,
          confirms_accepted=True, retry_on=(psycopg.OperationalError,), retry_base=2.0, retry_cap=240.0)
def notify_handoff(self, payload: dict) -> str:
    """Tell the business about a handoff or hand-back (shared.handoff.webhook): one signed attempt, recorded; a
    failed one is retried with backoff, up to the webhook's MAX_ATTEMPTS."""
    tenant = get_runtime().tenants.require(payload["tenant_id"])
    outcome = deliver_webhook(tenant, self.uow, int(payload["event_id"]))
    if outcome.status == "retry":
        raise self.retry(countdown=backoff(outcome.attempt, self.retry_base, self.retry_cap))
    return outcome.status
