"""Inbound turns (queue `inbound`): the slow, LLM-bound work. Run with a thread pool so many turns are in flight."""
from __future__ import annotations

import logging

import psycopg

from shared.llm.base import LLMError
from shared.log import bind
from shared.taskqueue import QUEUE_INBOUND, TASK_HANDLE_INBOUND, TASK_SEND, enqueue
from shared.turn import run_turn
from workers.app import app
from workers.base import WabotTask, backoff
from workers.runtime import get_runtime

log = logging.getLogger(__name__)


@app.task(name=TASK_HANDLE_INBOUND, queue=QUEUE_INBOUND, base=WabotTask, bind=True, max_retries=5)
def handle_message(self, payload: dict) -> dict:
    """At-least-once delivery of the task; at most one reply per inbound message (see shared.turn)."""
    rt = get_runtime()
    tenant = rt.tenants.require(payload["tenant_id"])
    result = payload["result"]
    bind(message_id=result.get("messageId"), user_id=result.get("from"))
    try:
        turn = run_turn(tenant, rt.pools, rt.llm(tenant), result, payload.get("request_id"))
    except (LLMError, psycopg.OperationalError) as exc:
        retryable = getattr(exc, "retryable", True)
        log.warning("turn failed", extra={"error": str(exc), "retry": retryable, "attempt": self.request.retries})
        if retryable and self.request.retries < self.max_retries:
            raise self.retry(countdown=backoff(self.request.retries), exc=exc)
        raise
    # The outbox rows are committed: only now publish their sends.
    for outbound_id in turn.outbound_ids:
        enqueue(app, TASK_SEND, {"tenant_id": tenant.tenant_id, "outbound_id": outbound_id,
                                 "request_id": payload.get("request_id"), "message_id": result.get("messageId")})
    return {"outbound_ids": turn.outbound_ids, "duplicate": turn.duplicate}
