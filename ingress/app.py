"""The Flask app factory: settings and tenants are parsed once, then each small extension module is attached."""
from __future__ import annotations

from celery import Celery
from flask import Flask

from ingress import admin_api, console, errors, health, metrics, request_context, webhooks
from ingress.state import IngressState
from ingress.state import init_app as init_state
from shared.log import configure_logging
from shared.queueing.redis_conn import redis_client
from shared.config.settings import Settings, current_settings
from shared.queueing.tasks import make_celery
from shared.config.tenants import TenantRegistry, load_tenants


def create_app(settings: Settings | None = None, tenants: TenantRegistry | None = None,
               celery: Celery | None = None, configure_logs: bool = True) -> Flask:
    settings = settings or current_settings()  # under gunicorn: read by its master (gunicorn.conf.py), forked
    tenants = tenants or load_tenants(settings)
    if configure_logs:
        configure_logging(settings.log_level)

    app = Flask("wabot-ingress")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_webhook_bytes
    init_state(app, IngressState(settings=settings, tenants=tenants, celery=celery or make_celery(settings),
                                 redis=redis_client(settings.redis_url)))
    request_context.init_app(app)
    metrics.init_app(app)  # per-request counters, and GET /metrics
    errors.init_app(app)
    webhooks.init_app(app)
    health.init_app(app)
    admin_api.init_app(app)
    console.init_app(app)  # after admin_api: it shares its pools and limiter
    return app
