"""Liveness (`/health`) and readiness of the webhook path (`/webhooks/infobip/health`: Redis and tenant DBs).

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

bp = Blueprint("health", __name__)
CACHE_SECONDS = 5.0


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


def init_app(app: Flask) -> None:
    app.extensions["wabot.health"] = VerdictCache()  # per app (and so per worker process), not per module
    app.register_blueprint(bp)
