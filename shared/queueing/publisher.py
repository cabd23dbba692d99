"""Publishing that outlives a broker outage: what Redis refuses is kept in memory and retried in the background.

Why: work is committed to Postgres first (outbox rows, stored messages) and published to Redis after the commit
(a unit of work's flush, shared/db/unit_of_work.py; the workers' `publish` in workers/base.py feeds this class).
When Redis is away at that moment, raising helps nobody (the commit stands, a task retry would need Redis too) and
the recovery sweep only looks after a while. So each process keeps the refused publishes and retries them with
capped exponential backoff; they go out within `max_delay` seconds of Redis coming back.

Guarantees: best effort in memory, bounded in time (`give_up_after`) and size (`max_pending`); what is dropped or
lost with the process is still durable in Postgres and re-published by the `recover_stalled` sweep. Publishing
twice is harmless: every task is idempotent (a send posts only a `queued` row, under a per-row lock).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable
from shared import metrics

log = logging.getLogger(__name__)

Send = Callable[[str, dict, "float | None"], None]  # (task name, payload, countdown): raises when Redis refuses


@dataclass
class _Pending:
    task: str
    payload: dict
    countdown: float | None
    since: float           # monotonic time of the first attempt


class RetryingPublisher:
    def __init__(self, send: Send, *, first_delay: float = 0.25, max_delay: float = 2.0,
                 give_up_after: float = 900.0, max_pending: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send, self._clock = send, clock
        self.first_delay, self.max_delay, self.give_up_after, self.max_pending = (
            first_delay, max_delay, give_up_after, max_pending)
        self._pending: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def publish(self, task: str, payload: dict, countdown: float | None = None) -> bool:
        """Publish now, or keep it for the background retries. True when Redis took it now."""
        with self._cond:
            backlog = bool(self._pending)
        if not backlog:  # while a backlog waits, Redis is known to be away: queue behind it without waiting
            try:
                self._send(task, payload, countdown)
                return True
            except Exception as exc:
                metrics.enqueue_failed("publisher")
                log.warning("publish failed; retrying in the background",
                            extra={"task_name": task, "error": exc.__class__.__name__})
        self._keep(_Pending(task, payload, countdown, self._clock()))
        return False

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def _keep(self, item: _Pending) -> None:
        with self._cond:
            if len(self._pending) >= self.max_pending:
                log.error("publish backlog full; dropped (the recovery sweep re-publishes it)",
                          extra={"task_name": item.task})
                return
            self._pending.append(item)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="wabot-publisher", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        delay = self.first_delay
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                item = self._pending[0]
            if self._clock() - item.since > self.give_up_after:
                log.error("publish given up after the broker stayed away; the recovery sweep re-publishes it",
                          extra={"task_name": item.task, "waited_s": int(self._clock() - item.since)})
                self._pop(item)
                continue
            try:
                countdown = item.countdown
                if countdown is not None:  # the wait already spent in the backlog counts
                    countdown = max(0.0, countdown - (self._clock() - item.since))
                self._send(item.task, item.payload, countdown)
            except Exception:
                time.sleep(delay)
                delay = min(self.max_delay, delay * 2)
                continue
            delay = self.first_delay
            if self._pop(item) == 0:
                log.info("publish backlog flushed after a broker outage",
                         extra={"waited_s": round(self._clock() - item.since, 1)})

    def _pop(self, item: _Pending) -> int:
        """Forget the item just handled; returns how many still wait."""
        with self._cond:
            if self._pending and self._pending[0] is item:
                self._pending.popleft()
            return len(self._pending)
