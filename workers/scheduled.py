"""Scheduled work (queue `scheduled`), driven by celery beat: due reminders, and the outbox's safety net."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from shared import metrics
from shared.queueing import accepted
from shared.db import pending_reports
from shared.db.usage import start_of_local_day, tokens_since
from shared.db.messages import abandoned_users, stalled_users
from shared.clock import utcnow
from shared.delivery.outbox import requeue_stalled
from shared.delivery.reminder_dispatch import claim_due_reminders
from shared.handoff.gate import release_idle
from shared.queueing.tasks import (QUEUE_SCHEDULED, TASK_BACKFILL_EMBEDDINGS, TASK_DISPATCH_REMINDERS, TASK_RECOVER,
                                   TASK_REDRIVE_ACCEPTED, TASK_RELEASE_IDLE_HANDOFFS, TASK_RUN_TURN, enqueue)
from shared.conversation.turn import give_up
from workers.app import app
from workers.base import WabotTask, worker_redis
from workers.runtime import get_runtime

log = logging.getLogger(__name__)

BATCH = 100
MAX_BATCHES = 20                       # per tenant and run; the rest waits for the next beat
KEEP_PENDING_REPORTS = timedelta(days=7)


@app.task(name=TASK_DISPATCH_REMINDERS, queue=QUEUE_SCHEDULED, base=WabotTask, bind=True)
def dispatch_reminders(self, payload: dict | None = None) -> int:
    """Claim due reminders in every tenant database; two beats running at once never send one twice. Also
    forget reports that never found their message."""
    sent = 0
    for tenant in get_runtime().tenants:
        try:
            for _ in range(MAX_BATCHES):
                with self.uow.transaction(tenant) as tx:
                    claimed = claim_due_reminders(tx, utcnow(), BATCH)
                sent += claimed
                if claimed < BATCH:
                    break
            with self.uow.transaction(tenant) as tx:
                pending_reports.purge(tx.conn, utcnow() - KEEP_PENDING_REPORTS)
                # the day's tokens against the budget, for the "budget nearly spent" alert (every beat, ~30 s)
                metrics.budget(tenant.tenant_id, tokens_since(tx.conn, start_of_local_day(tenant, utcnow())),
                               tenant.config.daily_token_budget)
        except Exception:
            log.exception("scheduled dispatch failed", extra={"tenant_id": tenant.tenant_id})
            continue
    if sent:
        log.info("reminders dispatched", extra={"count": sent})
    return sent


@app.task(name=TASK_RELEASE_IDLE_HANDOFFS, queue=QUEUE_SCHEDULED, base=WabotTask, bind=True)
def release_idle_handoffs(self, payload: dict | None = None) -> int:
    """Conversations a person took over and left idle for the tenant's `handoff.idle_minutes` go back to the bot."""
    released = 0
    for tenant in get_runtime().tenants:
        try:
            with self.uow.transaction(tenant) as tx:
                released += release_idle(tx, utcnow())
        except Exception:
            log.exception("idle handoff release failed", extra={"tenant_id": tenant.tenant_id})
    if released:
        log.info("idle conversations handed back to the bot", extra={"count": released})
    return released


@app.task(name=TASK_BACKFILL_EMBEDDINGS, queue=QUEUE_SCHEDULED, base=WabotTask, bind=True)
def backfill_embeddings(self, payload: dict | None = None) -> int:
    """Embed memory stored without its vector (saved while the embedder failed; found by full-text meanwhile).
    A tenant whose embedder still fails is skipped with a warning and tried again at the next beat."""
    rt, done = get_runtime(), 0
    for tenant in rt.tenants:
        if tenant.vector_store == "sql_fallback":
            continue
        try:
            for _ in range(MAX_BATCHES):
                with self.uow.transaction(tenant) as tx:
                    embedded = rt.memory(tenant).backfill_embeddings(tx.conn, BATCH)
                done += embedded
                if embedded < BATCH:
                    break
        except Exception as exc:
            log.warning("embedding backfill failed; next beat tries again",
                        extra={"tenant_id": tenant.tenant_id, "error_type": exc.__class__.__name__})
    if done:
        log.info("memory embedded after an embedder outage", extra={"count": done})
    return done


# Longer than a turn's own retries with backoff (about 8 minutes at most), so the sweep does not pile new turn
# tasks on top of a turn that is still retrying; it is for tasks that were lost.
STALLED_TURN_SECONDS = 900


@app.task(name=TASK_RECOVER, queue=QUEUE_SCHEDULED, base=WabotTask, bind=True)
def recover_stalled(self, payload: dict | None = None) -> dict:
    """The safety net for lost tasks (a publish lost after its commit, Redis restarted without its data):
    messages still `received` and outbox rows still `queued` after a while get their task again (after the
    commit, retried while Redis is away). Both tasks are idempotent, so a false alarm costs nothing but a look."""
    rt = get_runtime()
    turns = sends = 0
    for tenant in rt.tenants:
        try:
            with self.uow.transaction(tenant) as tx:
                users = stalled_users(tx.conn, STALLED_TURN_SECONDS)
                for user_id in users:
                    tx.publish_after_commit(TASK_RUN_TURN, {"tenant_id": tenant.tenant_id, "user_id": user_id})
                abandoned = abandoned_users(tx.conn)
                stalled = requeue_stalled(tx, utcnow())
            for user_id in abandoned:
                give_up(tenant, rt.turn_deps, self.uow, user_id, None)
        except Exception:
            log.exception("recovery sweep failed", extra={"tenant_id": tenant.tenant_id})
            continue
        turns, sends = turns + len(users), sends + stalled
    if turns or sends:
        log.warning("recovered stalled work", extra={"turns": turns, "sends": sends})
    return {"turns": turns, "sends": sends}


@app.task(name=TASK_REDRIVE_ACCEPTED, queue=QUEUE_SCHEDULED, base=WabotTask, bind=True)
def redrive_accepted(self, payload: dict | None = None) -> dict:
    """Publish again what the webhook accepted (2xx) but no worker has done, and is no longer in its queue: the
    tasks a killed worker or a Redis restart lost (shared/queueing/accepted.py). Tasks are idempotent; a copy costs a look."""
    settings = get_runtime().settings
    outcome = accepted.redrive(
        worker_redis(), lambda task, body, task_id: enqueue(app, task, body, task_id=task_id), time.time(),
        first_after=settings.accepted_redrive_seconds, max_redrives=settings.accepted_max_redrives)
    if outcome.published:
        log.warning("accepted work was lost and is published again", extra={"tasks": len(outcome.published)})
    return {"published": len(outcome.published), "still_waiting": outcome.still_waiting, "dead": len(outcome.dead)}
