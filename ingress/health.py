"""Liveness (`/health`) and readiness of the webhook path (`/webhooks/infobip/health`: Redis and tenant DBs)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg
from flask import Blueprint, Flask, jsonify, request

from ingress.auth import presented_token, token_matches
from ingress.state import state

bp = Blueprint("health", __name__)


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


@bp.get("/webhooks/infobip/health")
def webhook_health():
    """Readiness: Redis and every tenant database. Anyone gets the verdict; the per-tenant detail (which names
    the agency's clients) only with the webhook token, as header `X-Webhook-Token` or Basic password."""
    st = state()
    try:
        redis_ok = bool(st.redis.ping())
    except Exception:
        redis_ok = False
    tenants = list(st.tenants)
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(tenants)))) as pool:
        db = dict(zip((t.tenant_id for t in tenants), pool.map(lambda t: _db_ok(t.db_dsn), tenants)))
    ok = redis_ok and all(db.values())
    body = {"status": "ok" if ok else "degraded", "redis": redis_ok,
            "tenant_databases_unreachable": sum(1 for v in db.values() if not v)}
    if token_matches(presented_token(request), st.settings.webhook_verify_token):
        body["tenant_databases"] = {k: ("ok" if v else "unreachable") for k, v in db.items()}
    return jsonify(body), 200 if ok else 503


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
