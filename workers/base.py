"""The base class of every task: logging context from the payload, timing, and the context cleared afterwards."""
from __future__ import annotations

import functools
import logging
import time
import uuid

import redis
from celery import Task

from shared.queueing import accepted
from shared import log as logctx
from shared.queueing.redis_conn import redis_client
from shared.queueing.tasks import TASK_QUEUES, enqueue

log = logging.getLogger("workers")


@functools.cache
def worker_redis() -> redis.Redis:
    from workers.runtime import get_runtime

    return redis_client(get_runtime().settings.redis_url)


def publish_tracked(app, task_name: str, payload: dict, countdown: float | None = None) -> None:
    """Publish a task that must not be lost between Redis and a worker: recorded first (shared/queueing/accepted.py), then
    forgotten by its worker once it returned, re-driven by the sweep if it vanished. Raises if Redis is away."""
    from workers.runtime import get_runtime

    item = accepted.Accepted(str(uuid.uuid4()), task_name, TASK_QUEUES[task_name], payload)
    accepted.record(worker_redis(), [item], time.time(), get_runtime().settings.accepted_redrive_seconds)
    enqueue(app, task_name, payload, countdown=countdown, task_id=item.task_id)


class WabotTask(Task):
    abstract = True
    # Tasks acknowledge after running (celeryconfig): a killed worker's task is redelivered (at-least-once),
    # so every task body must be idempotent.
    # True for the tasks the webhook records before it answers 2xx (shared/queueing/accepted.py): once such a task has
    # returned, its durable part is done and its record is forgotten, so the sweep will not publish it again.
    confirms_accepted = False

    def __call__(self, *args, **kwargs):
        payload = kwargs.get("payload") or {}
        logctx.clear()
        logctx.bind(request_id=payload.get("request_id"), tenant_id=payload.get("tenant_id"),
                    message_id=payload.get("message_id"), task=self.name, task_id=self.request.id)
        started = time.monotonic()
        try:
            result = super().__call__(*args, **kwargs)
            if self.confirms_accepted and self.request.id:
                accepted.forget_quietly(worker_redis(), [self.request.id])
            return result
        finally:
            log.debug("task finished", extra={"duration_ms": int((time.monotonic() - started) * 1000)})
            logctx.clear()


# A retry's countdown stays below the broker's visibility timeout (celeryconfig, 300 s by default): kombu would
# otherwise hand a task a worker holds for its countdown to a second worker.
RETRY_CAP_SECONDS = 240.0


def backoff(retries: int, base: float = 2.0, cap: float = RETRY_CAP_SECONDS) -> float:
    """Exponential backoff with full jitter, so retries of many tasks do not arrive together."""
    import random

    return random.uniform(0, min(cap, base * (2 ** retries)))
