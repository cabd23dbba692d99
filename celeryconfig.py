"""Celery settings shared by every worker, beat and the ingress (which only publishes).

The broker URL comes from REDIS_URL through shared.config.settings; everything else is here.
"""
import os

from kombu import Queue


def _seconds(name: str, default: str) -> int:
    """A whole number of seconds from the environment; a malformed value stops start-up naming the variable."""
    raw = os.environ.get(name, default).strip() or default
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"configuration error: {name} must be a whole number of seconds (1 or more)")
    return int(raw)


task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
task_ignore_result = True            # results live in Postgres, not in the broker

# At-least-once: a task is acknowledged after it ran, so a killed worker's task is delivered again.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# Redis redelivers a task a worker took but never acknowledged (killed, or lost its connection) after the
# visibility timeout: 6 minutes by default, longer than any countdown we give a task (300 s at most: Infobip
# send retries; a countdown longer than the timeout would hand the waiting task to a second worker) and than a
# turn normally runs. The next scan after that (every CELERY_RESTORE_INTERVAL seconds; kombu's default throttle
# would make it ten times rarer) restores it. Tasks lost outright (a worker killed between kombu's BRPOP and its
# unacked bookkeeping) are re-driven by `redrive_accepted` (shared/queueing/accepted.py) after ACCEPTED_REDRIVE_SECONDS,
# and turns left behind by the `recover_stalled` sweep.
broker_transport_options = {
    "visibility_timeout": _seconds("CELERY_VISIBILITY_TIMEOUT", "360"),
    "unacked_restore_interval": _seconds("CELERY_RESTORE_INTERVAL", "10"),
    "unacked_restore_throttle": 1,
    "socket_timeout": 5,
    "socket_connect_timeout": 2,
}
task_time_limit = 330               # below the visibility timeout (thread pools do not enforce it; turns stop
task_soft_time_limit = 300          # taking tool steps after 120 s and model calls have their own timeouts)
broker_connection_retry_on_startup = True

task_queues = [Queue(name) for name in ("inbound", "outbound", "events", "scheduled")]
task_default_queue = "inbound"
task_create_missing_queues = False
task_routes = {
    "wabot.inbound.*": {"queue": "inbound"},
    "wabot.outbound.*": {"queue": "outbound"},
    "wabot.events.*": {"queue": "events"},
    "wabot.scheduled.*": {"queue": "scheduled"},
}

worker_hijack_root_logger = False     # our JSON logging stays in charge
worker_send_task_events = True        # Flower shows tasks live
task_send_sent_event = True
timezone = "UTC"
enable_utc = True

beat_schedule = {
    "dispatch-due-reminders": {
        "task": "wabot.scheduled.dispatch_reminders",
        "schedule": _seconds("REMINDER_DISPATCH_SECONDS", "30"),
        "options": {"queue": "scheduled", "expires": 25},
    },
    "redrive-accepted-work": {
        "task": "wabot.scheduled.redrive_accepted",
        "schedule": _seconds("ACCEPTED_SWEEP_SECONDS", "30"),
        "options": {"queue": "scheduled", "expires": 25},
    },
    "recover-stalled-work": {
        "task": "wabot.scheduled.recover_stalled",
        "schedule": _seconds("RECOVERY_SWEEP_SECONDS", "60"),
        "options": {"queue": "scheduled", "expires": 55},
    },
}
