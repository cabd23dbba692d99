"""Inbound work (queue `inbound`): store each message, then run the user's debounced turn.

Run with a thread pool (`-P threads -c 50`): turns wait seconds on the LLM, so many must be in flight.
"""
from __future__ import annotations

import logging
import time

import psycopg
from psycopg_pool import PoolTimeout

from shared import metrics
from shared.conversation.turn import give_up, run_user_turn, store_inbound, store_unstorable
from shared.llm.base import LLMError
from shared.log import bind
from shared.queueing.tasks import QUEUE_INBOUND, TASK_HANDLE_INBOUND, TASK_RUN_TURN
from workers.app import app
from workers.base import WabotTask, backoff, worker_redis
from workers.runtime import get_runtime

log = logging.getLogger(__name__)

# The tenant database is away or busy and nothing was committed: retried without a bound (waits capped below the
# broker's visibility timeout). The ingress already acknowledged the webhook.
DATABASE_AWAY = (psycopg.OperationalError, PoolTimeout)
TURN_RETRIES = 8  # retryable failures (LLM outages and rate limits, database away), with backoff
MAX_WAITS = 600   # busy/debounce re-checks of about a second each


@app.task(name=TASK_HANDLE_INBOUND, queue=QUEUE_INBOUND, base=WabotTask, bind=True, max_retries=None,
          confirms_accepted=True, retry_on=DATABASE_AWAY)
def handle_message(self, payload: dict) -> dict:
    """Store the message (exactly once per messageId); its user's turn is published after the commit, once the
    debounce window has passed.

    At-least-once: if this task dies after storing, its redelivery finds the message still `received` and
    schedules the turn again; extra turn tasks find nothing pending and end.
    """
    rt = get_runtime()
    tenant = rt.tenants.require(payload["tenant_id"])
    result = payload["result"]
    bind(message_id=result.get("messageId"), user_id=result.get("from"))
    try:
        stored = store_inbound(tenant, rt.turn_deps, self.uow, result, payload.get("request_id"))
    except DATABASE_AWAY:
        raise
    except Exception:
        # Content the database refuses (the ingress validates, so this is a gap in that validation): never
        # silence. A placeholder row and the apology; only without a phone number to answer is it dropped, loudly.
        log.exception("inbound message could not be stored: stored as failed with an apology")
        try:
            store_unstorable(tenant, rt.turn_deps, self.uow, result, payload.get("request_id"))
        except DATABASE_AWAY:
            raise
        except Exception:
            log.exception("inbound message can be neither stored nor answered: dropped")
            return {"status": "dropped", "duplicate": False}
        return {"status": "failed", "duplicate": False}
    if not stored.duplicate:  # the turn's latency runs from the webhook's receipt to its reply's first send
        metrics.remember_receipt(worker_redis(), tenant.tenant_id, payload.get("request_id"),
                                 payload.get("received_at"))
    return {"status": stored.status, "duplicate": stored.duplicate}


def llm_retry_in(exc: LLMError, failures: int, failing_since: float, ceiling: float, now: float) -> float | None:
    """When to try a turn again after a retryable model failure (never before the provider's circuit may close,
    or its keys cool down), or None when that would pass the turn's model-time ceiling (`llm.turn_seconds`):
    then the user gets the apology now rather than an answer minutes late."""
    wait = max(backoff(failures), exc.retry_after or 0.0)
    return None if now + wait - failing_since > ceiling else wait


@app.task(name=TASK_RUN_TURN, queue=QUEUE_INBOUND, base=WabotTask, bind=True, max_retries=None,
          confirms_accepted=True)
def run_turn(self, payload: dict) -> dict:
    """One turn for one user (per-user order, debounce and crash safety: see shared.conversation.turn)."""
    rt = get_runtime()
    tenant = rt.tenants.require(payload["tenant_id"])
    user_id = int(payload["user_id"])
    started = time.time()
    try:
        outcome = run_user_turn(tenant, rt.turn_deps, self.uow, user_id, payload.get("request_id"))
    except Exception as exc:  # the turn's transaction rolled back: its messages are still `received`
        failures = int(payload.get("failures", 0))  # counted apart from the busy/debounce re-checks below
        since = float(payload.get("failing_since") or started)
        wait = None
        if isinstance(exc, DATABASE_AWAY):
            wait = backoff(failures)
        elif isinstance(exc, LLMError) and exc.retryable:
            wait = llm_retry_in(exc, failures, since, tenant.llm.turn_seconds, time.time())
        log.warning("turn failed", extra={"error_type": exc.__class__.__name__, "retry": wait is not None,
                                          "failures": failures})
        if wait is not None and failures < TURN_RETRIES:
            metrics.turn("retried", tenant.tenant_id)
            raise self.retry(countdown=wait, exc=exc, kwargs={"payload": {
                **payload, "failures": failures + 1, "failing_since": since}})
        log.exception("turn failed for good")
        give_up(tenant, rt.turn_deps, self.uow, user_id, payload.get("request_id"))
        metrics.turn("failed", tenant.tenant_id)
        raise
    if outcome.retry_in_ms is not None:
        # Busy (the user's previous turn holds the lock) or inside the debounce window: look again shortly. A
        # turn that waited this long gives way to the recovery sweep rather than polling forever.
        waits = int(payload.get("waits", 0))
        if waits < MAX_WAITS:
            raise self.retry(countdown=outcome.retry_in_ms / 1000,
                             kwargs={"payload": {**payload, "waits": waits + 1}})
        log.warning("turn still busy after many checks; the recovery sweep will pick it up")
    else:
        metrics.turn("answered" if outcome.answered else "no_reply", tenant.tenant_id)
    return {"answered": outcome.answered, "reason": outcome.reason}
