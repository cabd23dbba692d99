"""Delivery and seen reports (queue `events`): idempotent updates of the outbox row they name."""
from __future__ import annotations

import logging

from shared.db import repo
from shared.taskqueue import QUEUE_EVENTS, TASK_APPLY_REPORT
from shared.turn import parse_infobip_time
from workers.app import app
from workers.base import WabotTask
from workers.runtime import get_runtime

log = logging.getLogger(__name__)


@app.task(name=TASK_APPLY_REPORT, queue=QUEUE_EVENTS, base=WabotTask, bind=True, max_retries=5)
def apply_report(self, payload: dict) -> bool:
    rt = get_runtime()
    tenant = rt.tenants.require(payload["tenant_id"])
    report = payload["report"]
    with rt.pools.connection(tenant) as conn:
        if payload["kind"] == "seen":
            found = repo.apply_seen_report(conn, report["messageId"], parse_infobip_time(report.get("seenAt")))
        else:
            found = repo.apply_delivery_report(conn, report["messageId"], report)
    if not found:
        # A report may overtake the commit of its send; look again a little later before giving up.
        if self.request.retries < self.max_retries:
            raise self.retry(countdown=2 ** self.request.retries)
        log.warning("report for an unknown message", extra={"infobip_message_id": report["messageId"]})
    return found
