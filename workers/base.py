"""The base class of every task: logging context from the payload, timing, and the context cleared afterwards."""
from __future__ import annotations

import logging
import time

from celery import Task

from shared import log as logctx

log = logging.getLogger("workers")


class WabotTask(Task):
    abstract = True
    # Tasks acknowledge after running (celeryconfig): a killed worker's task is redelivered (at-least-once),
    # so every task body must be idempotent.

    def __call__(self, *args, **kwargs):
        payload = kwargs.get("payload") or {}
        logctx.clear()
        logctx.bind(request_id=payload.get("request_id"), tenant_id=payload.get("tenant_id"),
                    message_id=payload.get("message_id"), task=self.name, task_id=self.request.id)
        started = time.monotonic()
        try:
            return super().__call__(*args, **kwargs)
        finally:
            log.debug("task finished", extra={"duration_ms": int((time.monotonic() - started) * 1000)})
            logctx.clear()


def backoff(retries: int, base: float = 2.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter, so retries of many tasks do not arrive together."""
    import random

    return random.uniform(0, min(cap, base * (2 ** retries)))
