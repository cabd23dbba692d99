"""Liveness (`/health`), readiness of the webhook path (`/webhooks/infobip/health`: Redis and tenant DBs) and of
the whole bot (`/ready`: that too, plus a live worker for every queue of READY_QUEUES, with the queues' depth and
oldest age).

`/webhooks/infobip/health` is what a load balancer in front of the webhook should use: the webhook takes work
while workers are down (it waits in Redis). `/ready` says whether that work is being done: 503 once a queue has
had no worker heartbeat for 15 s (shared/queueing/monitor.py; a worker stopping cleanly removes its heartbeat
at once), 200 again at the first heartbeat of a new one.

The readiness endpoint needs no credentials, so anyone can call it as often as they like: the verdict is
computed at most once per `CACHE_SECONDS` per gunicorn worker process (one refresh at a time; while it runs,
other requests get the previous verdict), so a flood of calls costs the tenant databases nothing more.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import psycopg  # under gunicorn's gevent worker it is imported after monkey-patching: its waits then yield
from flask import Blueprint, Flask, current_app, jsonify, request

from ingress.auth import presented_token, token_matches
from ingress.state import state
from shared.queueing import monitor
from shared.queueing.tasks import QUEUES

bp = Blueprint("health", __name__)
CACHE_SECONDS = 5.0
READY_CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class Verdict:
    redis_ok: bool
    databases: dict[str, bool]  # tenant_id -> reachable
    checked_at: float           # time.monotonic()

    @property
    def ok(self) -> bool:
        return self.redis_ok and all(self.databases.values())


class VerdictCache:
    """The last verdict of this process, refreshed by one caller at a time once it is `ttl` seconds old."""

    def __init__(self, ttl: float = CACHE_SECONDS):
        self.ttl = ttl
        self._lock = threading.Lock()
        self._verdict: Verdict | None = None

    def _fresh(self, verdict: Verdict | None) -> bool:
        return verdict is not None and time.monotonic() - verdict.checked_at < self.ttl

    def get(self, check: Callable[[], Verdict]) -> Verdict:
        verdict = self._verdict
        if self._fresh(verdict):
            return verdict  # type: ignore[return-value]
        # A stale verdict is served while another request refreshes; only a process's very first call waits.
        if not self._lock.acquire(blocking=verdict is None):
            return verdict  # type: ignore[return-value]
        try:
            if not self._fresh(self._verdict):  # someone may have refreshed while we waited for the lock
                self._verdict = check()
            return self._verdict  # type: ignore[return-value]
        finally:
            self._lock.release()


@bp.get("/health")
def health():
    return jsonify({"status": "ok"})


def _db_ok(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:
        return False


def _check() -> Verdict:
    """One real check: a Redis PING and a short connection to every tenant database (at most 8 at once)."""
    st = state()
    try:
        redis_ok = bool(st.redis.ping())
    except Exception:
        redis_ok = False
    tenants = list(st.tenants)
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(tenants)))) as pool:
        db = dict(zip((t.tenant_id for t in tenants), pool.map(lambda t: _db_ok(t.db_dsn), tenants)))
    return Verdict(redis_ok, db, time.monotonic())


@bp.get("/webhooks/infobip/health")
def webhook_health():
    """Readiness: Redis and every tenant database, as of at most `CACHE_SECONDS` ago (`checked_seconds_ago`).
    Anyone gets the verdict; the per-tenant detail (which names the agency's clients) only with the webhook
    token, as header `X-Webhook-Token` or Basic password."""
    verdict = current_app.extensions["wabot.health"].get(_check)
    body = {"status": "ok" if verdict.ok else "degraded", "redis": verdict.redis_ok,
            "tenant_databases_unreachable": sum(1 for v in verdict.databases.values() if not v),
            "checked_seconds_ago": round(time.monotonic() - verdict.checked_at, 1)}
    if token_matches(presented_token(request), state().settings.webhook_verify_token):
        body["tenant_databases"] = {k: ("ok" if v else "unreachable") for k, v in verdict.databases.items()}
    return jsonify(body), 200 if verdict.ok else 503


@dataclass(frozen=True)
class Readiness:
    workers: dict[str, int]                # queue -> live workers (every queue)
    queues: dict[str, monitor.QueueState]  # queue -> depth and oldest age
    redis_error: bool
    checked_at: float


def _check_workers() -> Readiness:
    redis, now = state().redis, time.time()
    try:
        return Readiness(monitor.alive(redis, QUEUES, now), monitor.snapshot(redis, QUEUES, now), False,
                         time.monotonic())
    except Exception:
        return Readiness({q: 0 for q in QUEUES}, {}, True, time.monotonic())


@bp.get("/ready")
def ready():
    """Readiness of the bot: Redis, the tenant databases (as `/webhooks/infobip/health`) and a live worker for
    every queue of READY_QUEUES. Body: per queue its live workers, depth and oldest task's age in seconds."""
    verdict = current_app.extensions["wabot.health"].get(_check)
    workers = current_app.extensions["wabot.ready"].get(_check_workers)
    missing = [q for q in state().settings.ready_queues if not workers.workers.get(q)]
    ok = verdict.ok and not workers.redis_error and not missing
    body = {"status": "ok" if ok else "degraded", "redis": verdict.redis_ok and not workers.redis_error,
            "tenant_databases_unreachable": sum(1 for v in verdict.databases.values() if not v),
            "queues_without_workers": missing,
            "queues": {q: {"workers": workers.workers.get(q, 0),
                           "depth": workers.queues[q].depth if q in workers.queues else None,
                           "oldest_age_seconds": round(workers.queues[q].oldest_age, 1) if q in workers.queues
                           else None} for q in QUEUES},
            "checked_seconds_ago": round(time.monotonic() - min(verdict.checked_at, workers.checked_at), 1)}
    return jsonify(body), 200 if ok else 503


def init_app(app: Flask) -> None:
    app.extensions["wabot.health"] = VerdictCache()  # per app (and so per worker process), not per module
    app.extensions["wabot.ready"] = VerdictCache(READY_CACHE_SECONDS)
    app.register_blueprint(bp)
