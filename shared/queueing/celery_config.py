"""Celery settings shared by every worker, beat and the ingress (which only publishes), built from the process
settings: `celery_config(settings)` for an app made with settings at hand, `LazyCeleryConfig` for the workers' app,
which is created at import and reads the settings only when Celery first looks at its configuration.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

from kombu import Queue

from shared.config.settings import Settings
from shared.queueing.redis_conn import broker_url

QUEUE_NAMES = ("inbound", "outbound", "events", "scheduled", "knowledge", "summaries")  # shared/queueing/tasks.py QUEUES, without the import
TASK_TIME_LIMIT = 330        # below the visibility timeout (thread pools do not enforce it; turns stop
TASK_SOFT_TIME_LIMIT = 300   # taking tool steps after 120 s and model calls have their own timeouts)


BACKFILL_SECONDS = 300


def _beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "dispatch-due-reminders": {
            "task": "wabot.scheduled.dispatch_reminders",
            "schedule": settings.reminder_dispatch_seconds,
            "options": {"queue": "scheduled", "expires": 25},
        },
        "redrive-accepted-work": {
            "task": "wabot.scheduled.redrive_accepted",
            "schedule": settings.accepted_sweep_seconds,
            "options": {"queue": "scheduled", "expires": 25},
        },
        "recover-stalled-work": {
            "task": "wabot.scheduled.recover_stalled",
            "schedule": settings.recovery_sweep_seconds,
            "options": {"queue": "scheduled", "expires": 55},
        },
        "release-idle-handoffs": {  # handoff.idle_minutes: back to the bot, with the notice
            "task": "wabot.scheduled.release_idle_handoffs",
            "schedule": 60,
            "options": {"queue": "scheduled", "expires": 55},
        },
        "backfill-embeddings": {  # memory saved while the embedder was down (found by full-text meanwhile)
            "task": "wabot.scheduled.backfill_embeddings",
            "schedule": BACKFILL_SECONDS,
            "options": {"queue": "scheduled", "expires": BACKFILL_SECONDS - 5},
        },
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration of every wabot app (`app.config_from_object(celery_config(settings))`)."""
    return {
        "broker_url": broker_url(settings.redis_url),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,            # results live in Postgres, not in the broker
        # At-least-once: a task is acknowledged after it ran, so a killed worker's task is delivered again.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Redis redelivers a task a worker took but never acknowledged (killed, or lost its connection) after the
        # visibility timeout: 6 minutes by default, longer than any countdown we give a task (300 s at most:
        # Infobip send retries; a countdown longer than the timeout would hand the waiting task to a second
        # worker) and than a turn normally runs. The next scan after that (every CELERY_RESTORE_INTERVAL seconds;
        # kombu's default throttle would make it ten times rarer) restores it. Tasks lost outright (a worker killed
        # between kombu's BRPOP and its unacked bookkeeping) are re-driven by `redrive_accepted`
        # (shared/queueing/accepted.py) after ACCEPTED_REDRIVE_SECONDS, and turns left behind by `recover_stalled`.
        "broker_transport_options": {
            "visibility_timeout": settings.celery_visibility_timeout,
            "unacked_restore_interval": settings.celery_restore_interval,
            "unacked_restore_throttle": 1,
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
        },
        "task_time_limit": TASK_TIME_LIMIT,
        "task_soft_time_limit": TASK_SOFT_TIME_LIMIT,
        "broker_connection_retry_on_startup": True,
        "task_queues": [Queue(name) for name in QUEUE_NAMES],
        "task_default_queue": "inbound",
        "task_create_missing_queues": False,
        "task_routes": {f"wabot.{name}.*": {"queue": name} for name in QUEUE_NAMES},
        "worker_hijack_root_logger": False,    # our JSON logging stays in charge
        # Task events are what Flower shows live. Off unless CELERY_TASK_EVENTS is on (`wabot dev` turns it on):
        # every publish would also PUBLISH a task-sent event (and saferepr its arguments), ~28 % of the ingress's
        # CPU (bench/bench_ingress.py), and every worker task two more events.
        "worker_send_task_events": settings.celery_task_events,
        "task_send_sent_event": settings.celery_task_events,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": _beat_schedule(settings),
    }


class LazyCeleryConfig(Mapping[str, Any]):
    """`celery_config` of the settings `load` returns, computed on first read: Celery reads its configuration
    source when the configuration is first used (a worker, beat or flower starting), not when the app is made."""

    def __init__(self, load: Callable[[], Settings]) -> None:
        self._load = load
        self._config: dict[str, Any] | None = None

    def _resolved(self) -> dict[str, Any]:
        if self._config is None:
            self._config = celery_config(self._load())
        return self._config

    def __getitem__(self, key: str) -> Any:
        return self._resolved()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolved())

    def __len__(self) -> int:
        return len(self._resolved())
