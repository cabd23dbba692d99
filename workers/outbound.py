"""Infobip sends (queue `outbound`). Retries keep the same outbox row and so the same Infobip messageId."""
from __future__ import annotations

from shared.outbox import send_outbound
from shared.taskqueue import QUEUE_OUTBOUND, TASK_SEND
from workers.app import app
from workers.base import WabotTask, backoff
from workers.runtime import get_runtime


@app.task(name=TASK_SEND, queue=QUEUE_OUTBOUND, base=WabotTask, bind=True, max_retries=6)
def send(self, payload: dict) -> str:
    rt = get_runtime()
    tenant = rt.tenants.require(payload["tenant_id"])
    outcome = send_outbound(tenant, rt.pools, rt.infobip(tenant), int(payload["outbound_id"]),
                            last_attempt=self.request.retries >= self.max_retries)
    if outcome.status == "retry":
        countdown = outcome.retry_after if outcome.retry_after is not None else backoff(self.request.retries, 1.0, 60)
        raise self.retry(countdown=countdown)
    return outcome.status
