"""Scheduled work (queue `scheduled`), driven by celery beat."""
from __future__ import annotations

import logging

from shared.reminders import claim_due_reminders
from shared.taskqueue import QUEUE_SCHEDULED, TASK_DISPATCH_REMINDERS, TASK_SEND, enqueue
from shared.turn import utcnow
from workers.app import app
from workers.base import WabotTask
from workers.runtime import get_runtime

log = logging.getLogger(__name__)


@app.task(name=TASK_DISPATCH_REMINDERS, queue=QUEUE_SCHEDULED, base=WabotTask, bind=True)
def dispatch_reminders(self, payload: dict | None = None) -> int:
    """Claim due reminders in every tenant database; two beats running at once never send one twice."""
    rt = get_runtime()
    sent = 0
    for tenant in rt.tenants:
        try:
            with rt.pools.connection(tenant) as conn:
                ids = claim_due_reminders(conn, tenant, utcnow())
        except Exception:
            log.exception("reminder dispatch failed", extra={"tenant_id": tenant.tenant_id})
            continue
        for outbound_id in ids:  # committed above
            enqueue(app, TASK_SEND, {"tenant_id": tenant.tenant_id, "outbound_id": outbound_id})
        sent += len(ids)
    if sent:
        log.info("reminders dispatched", extra={"count": sent})
    return sent
