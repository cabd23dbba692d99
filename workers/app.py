"""The Celery app of the workers: shared settings, JSON logging, migrations at start-up, and the task modules.

Importing this module reads no environment: the app is configured from the process settings when Celery first
reads its configuration (`celery -A workers worker|beat|flower` at start-up, before any broker connection).
"""
from __future__ import annotations

import logging

from celery import signals

from shared.config.settings import current_settings
from shared.db.migrate import load_migrations, migrate_tenant
from shared.log import configure_logging
from shared.queueing.tasks import make_celery
from workers import broker
from workers import metrics as _metrics  # noqa: F401 - its signals: the exporter and heartbeats
from workers.runtime import get_runtime

broker.install()  # before any broker connection: a Redis restart must not kill the worker (see workers/broker.py)
app = make_celery(None, name="workers")
app.conf.include = ["workers.inbound", "workers.outbound", "workers.events", "workers.scheduled",
                    "workers.knowledge", "workers.summaries"]
# Reconnect to the broker for as long as it stays away (celery's default gives up after 100 attempts, about 45 minutes
# at its 30-second cap, and the worker exits). Set here, for every `-A workers` process (workers, beat, flower).
app.conf.broker_connection_max_retries = None


@signals.setup_logging.connect
def _setup_logging(**_kwargs):
    configure_logging(current_settings().log_level)


@signals.worker_init.connect
def _migrate_on_start(**_kwargs):
    """Bring every tenant database up to date before taking work (serialised by an advisory lock)."""
    runtime = get_runtime()
    runtime.check()  # tools, agents, limits and embedders of every tenant: configuration errors stop start-up
    migrations = load_migrations(runtime.settings.migrations_dir)
    for tenant in runtime.tenants:
        try:
            migrate_tenant(tenant, migrations)
        except Exception as exc:  # one broken tenant database must not stop the others
            logging.getLogger("workers").error("migration failed", extra={
                "tenant_id": tenant.tenant_id, "error": exc.__class__.__name__})
