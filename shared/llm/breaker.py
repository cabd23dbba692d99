"""A circuit breaker per model provider entry, shared by every thread of a process and, through Redis, by every
process: once a provider is down, calls skip it at once (the fallback answers, or the turn waits) instead of
each paying the full call deadline.

States: closed (calls go through) -> open for `open_seconds` after `failures` failed calls in a row (outages:
timeouts, connection errors, 5xx; never a 4xx or an empty answer) -> half-open: ONE call, in one process, is let
through as a trial (a Redis SET NX claim); its success closes the circuit everywhere, its failure opens it again.
While a trial runs, other calls still skip the provider.

Why not pybreaker: its `CircuitBreaker.call` holds one lock for the whole call, so 200 threads talking to one
provider would take turns; here the lock guards only the counters. Redis errors never fail a call: the breaker
then works per process (logged once a minute).
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Callable

import redis

from shared.llm.base import LLMError

log = logging.getLogger(__name__)

PREFIX = "wabot:llm:circuit:"


class CircuitOpen(LLMError):
    """The provider is skipped for now; `retry_after` says when it may be tried again."""


class Breaker:
    def __init__(self, label: str, identity: str, *, client: "redis.Redis | None" = None, failures: int = 1,
                 open_seconds: float = 30.0, trial_seconds: float = 60.0, clock: Callable[[], float] = time.time):
        self.label = label
        self._key = PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:32]  # identity holds no key, still
        self._redis, self._threshold, self._open_seconds = client, max(1, failures), open_seconds
        self._trial_seconds, self._clock = trial_seconds, clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0        # this process's view; Redis has the shared one
        self._trial = threading.local()
        self._redis_warned_at = -1e9

    def before_call(self) -> None:
        """Raise CircuitOpen when the provider is to be skipped; otherwise the call may go (maybe as the trial)."""
        now = self._clock()
        self._trial.active = False
        open_until = max(self._open_until, self._shared_open_until())
        if open_until == 0.0:
            return
        if open_until > now:
            raise self._open(open_until - now)
        if self._claim_trial():
            self._trial.active = True
            log.info("LLM provider circuit half-open: one trial call", extra={"llm_entry": self.label})
            return
        raise self._open(min(self._trial_seconds, self._open_seconds))

    def succeeded(self) -> None:
        was_open = self._open_until or getattr(self._trial, "active", False)
        with self._lock:
            self._failures, self._open_until = 0, 0.0
        if was_open:
            self._shared(lambda r: r.delete(self._key, self._key + ":trial"))
            log.info("LLM provider answers again: circuit closed", extra={"llm_entry": self.label})

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            trip = self._failures >= self._threshold or getattr(self._trial, "active", False)
            if trip:
                self._open_until = self._clock() + self._open_seconds
            open_until = self._open_until
        if trip:
            ttl_ms = int((self._open_seconds + self._trial_seconds) * 1000 * 4)
            self._shared(lambda r: (r.set(self._key, repr(open_until), px=ttl_ms), r.delete(self._key + ":trial")))
            log.warning("LLM provider circuit open: calls skip it", extra={
                "llm_entry": self.label, "open_seconds": self._open_seconds})

    def _open(self, retry_after: float) -> CircuitOpen:
        return CircuitOpen(f"{self.label} skipped: it failed just now (circuit open for {retry_after:.0f} s more)",
                           retryable=True, retry_after=retry_after)

    def _shared_open_until(self) -> float:
        raw = self._shared(lambda r: r.get(self._key))
        try:
            return float(raw) if raw is not None else 0.0
        except (TypeError, ValueError):
            return 0.0

    def _claim_trial(self) -> bool:
        if self._redis is None:
            with self._lock:  # one trial per process: push the local view forward while it runs
                if self._open_until and self._open_until <= self._clock():
                    self._open_until = self._clock() + self._trial_seconds
                    return True
                return False
        claimed = self._shared(lambda r: r.set(self._key + ":trial", "1", nx=True,
                                               px=int(self._trial_seconds * 1000)), failed=True)
        return bool(claimed)

    def _shared(self, op, failed=None):
        if self._redis is None:
            return failed
        try:
            return op(self._redis)
        except redis.RedisError as exc:
            now = time.monotonic()
            if now - self._redis_warned_at > 60:
                self._redis_warned_at = now
                log.warning("circuit breaker state not shared (Redis unavailable)",
                            extra={"llm_entry": self.label, "error_type": exc.__class__.__name__})
            return failed


class Breakers:
    """The process's breakers, one per provider entry identity (kind, URL, model), built on first use."""

    def __init__(self, client: "redis.Redis | None" = None, *, clock: Callable[[], float] = time.time):
        self._client, self._clock = client, clock
        self._lock = threading.Lock()
        self._breakers: dict[str, Breaker] = {}

    def get(self, label: str, identity: str, *, failures: int, open_seconds: float,
            trial_seconds: float) -> Breaker:
        with self._lock:
            breaker = self._breakers.get(identity)
            if breaker is None:
                breaker = Breaker(label, identity, client=self._client, failures=failures,
                                  open_seconds=open_seconds, trial_seconds=trial_seconds, clock=self._clock)
                self._breakers[identity] = breaker
            return breaker
