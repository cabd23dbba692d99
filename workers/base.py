"""The base class of every task: the log context from the payload, the task's unit of work (flushed after the
body, so what committed is published even when the body then retries or fails), and the retry policy, declared
per task (`retry_on`, `retry_base`, `retry_cap`) with one backoff function."""
from __future__ import annotations

import contextvars
import functools
import logging
import random
import time
import uuid

import redis
from celery import Celery, Task
from celery.exceptions import Retry

from shared import log as logctx
from shared import metrics
from shared.db.unit_of_work import Publication, UnitOfWork
from shared.queueing import accepted
from shared.queueing.publisher import RetryingPublisher
from shared.queueing.redis_conn import redis_client
from shared.queueing.tasks import TASK_QUEUES, enqueue
from workers.runtime import get_runtime

log = logging.getLogger("workers")

# A retry's countdown stays below the broker's visibility timeout (shared/queueing/celery_config.py, 360 s by
# default): kombu would otherwise hand a task a worker holds for its countdown to a second worker.
RETRY_CAP_SECONDS = 240.0


def backoff(retries: int, base: float = 2.0, cap: float = RETRY_CAP_SECONDS) -> float:
    """Exponential backoff with full jitter, so retries of many tasks do not arrive together. The exponent is
    capped too, so the thousandth retry of a days-long outage computes a wait like the sixteenth."""
    return random.uniform(0, min(cap, base * (2 ** min(retries, 16))))


@functools.cache
def worker_redis() -> redis.Redis:
    return redis_client(get_runtime().settings.redis_url)


def publish_tracked(app: Celery, task_name: str, payload: dict, countdown: float | None = None) -> None:
    """Publish a task that must not be lost between Redis and a worker: recorded first (shared/queueing/accepted.py), then
    forgotten by its worker once it returned, re-driven by the sweep if it vanished. Raises if Redis is away."""
    item = accepted.Accepted(str(uuid.uuid4()), task_name, TASK_QUEUES[task_name], payload)
    accepted.record(worker_redis(), [item], time.time(), get_runtime().settings.accepted_redrive_seconds)
    enqueue(app, task_name, payload, countdown=countdown, task_id=item.task_id)


@functools.cache
def retrying_publisher(app: Celery) -> RetryingPublisher:
    """One per process: one backlog of what Redis refused, and one thread retrying it (shared/queueing/publisher.py)."""
    return RetryingPublisher(lambda task, payload, countdown: enqueue(app, task, payload, countdown))


def publish(app: Celery, publication: Publication) -> None:
    """Publish what a unit of work committed: tracked tasks raise while Redis is away (the task is retried, its
    own record re-drives it); the others never raise (kept and retried in the background, durable in Postgres
    for the recovery sweep anyway)."""
    if publication.tracked:
        publish_tracked(app, publication.task, publication.payload, publication.countdown)
    else:
        retrying_publisher(app).publish(publication.task, publication.payload, publication.countdown)


_current_uow: contextvars.ContextVar[UnitOfWork] = contextvars.ContextVar("wabot_unit_of_work")


class WabotTask(Task):
    abstract = True
    # Tasks acknowledge after running (shared/queueing/celery_config.py): a killed worker's task is redelivered
    # (at-least-once), so every task body must be idempotent.
    # True for the tasks the webhook records before it answers 2xx (shared/queueing/accepted.py): once such a task has
    # returned, its durable part is done and its record is forgotten, so the sweep will not publish it again.
    confirms_accepted = False
    # Errors that mean "try again later" (a tenant database away or busy): the task is retried without bound
    # (declare max_retries=None) after backoff(retries, retry_base, retry_cap).
    retry_on: tuple[type[BaseException], ...] = ()
    retry_base = 2.0
    retry_cap = RETRY_CAP_SECONDS

    @property
    def uow(self) -> UnitOfWork:
        """The running task's unit of work: domain code registers on it what to publish after its commits."""
        return _current_uow.get()

    def __call__(self, *args, **kwargs):
        payload = kwargs.get("payload") or {}
        logctx.clear()
        logctx.bind(request_id=payload.get("request_id"), tenant_id=payload.get("tenant_id"),
                    message_id=payload.get("message_id"), task=self.name, task_id=self.request.id)
        started = time.monotonic()
        uow = UnitOfWork(get_runtime().pools, functools.partial(publish, self.app),
                         request_id=payload.get("request_id"), message_id=payload.get("message_id"))
        token = _current_uow.set(uow)
        outcome = "error"
        try:
            try:
                result = super().__call__(*args, **kwargs)
            except self.retry_on as exc:
                raise self.retry_later(exc)
            finally:
                uow.flush()
            if self.confirms_accepted and self.request.id:  # after the flush: the tracked tasks it made are recorded
                accepted.forget_quietly(worker_redis(), [self.request.id])
            outcome = "ok"
            return result
        except Retry:
            outcome = "retry"
            raise
        finally:
            _current_uow.reset(token)
            metrics.task_done(self.name, outcome, time.monotonic() - started)
            log.debug("task finished", extra={"duration_ms": int((time.monotonic() - started) * 1000)})
            logctx.clear()

    def retry_later(self, exc: BaseException, attempt: int | None = None, **options) -> Exception:
        """The retry of the declared policy (raise it): `attempt` (default: Celery's retry count) sets the wait."""
        delay = backoff(self.request.retries if attempt is None else attempt, self.retry_base, self.retry_cap)
        log.warning("task retried", extra={"error_type": exc.__class__.__name__, "retries": self.request.retries,
                                           "retry_in": round(delay, 3)})
        return self.retry(countdown=delay, exc=exc, **options)
