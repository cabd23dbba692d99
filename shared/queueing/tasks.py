"""Task names, queues and the Celery app both sides share.

The ingress publishes by task *name* (it never imports the workers); the workers register the same names.
One queue per kind of work so each pool scales on its own.
"""
from __future__ import annotations

from celery import Celery

from shared.queueing.redis_conn import broker_url
from shared.config.settings import Settings

QUEUE_INBOUND = "inbound"      # LLM turns: slow, many in flight (thread pool)
QUEUE_OUTBOUND = "outbound"    # Infobip sends
QUEUE_EVENTS = "events"        # delivery and seen reports
QUEUE_SCHEDULED = "scheduled"  # celery beat work (reminders)
QUEUES = (QUEUE_INBOUND, QUEUE_OUTBOUND, QUEUE_EVENTS, QUEUE_SCHEDULED)

TASK_HANDLE_INBOUND = "wabot.inbound.handle_message"
TASK_RUN_TURN = "wabot.inbound.run_turn"
TASK_SEND = "wabot.outbound.send"
TASK_APPLY_REPORT = "wabot.events.apply_report"
TASK_DISPATCH_REMINDERS = "wabot.scheduled.dispatch_reminders"
TASK_RECOVER = "wabot.scheduled.recover_stalled"
TASK_REDRIVE_ACCEPTED = "wabot.scheduled.redrive_accepted"

TASK_QUEUES = {
    TASK_HANDLE_INBOUND: QUEUE_INBOUND,
    TASK_RUN_TURN: QUEUE_INBOUND,
    TASK_SEND: QUEUE_OUTBOUND,
    TASK_APPLY_REPORT: QUEUE_EVENTS,
    TASK_DISPATCH_REMINDERS: QUEUE_SCHEDULED,
    TASK_RECOVER: QUEUE_SCHEDULED,
    TASK_REDRIVE_ACCEPTED: QUEUE_SCHEDULED,
}

# Publishing must fail fast when Redis is down: the ingress then answers 503 and Infobip retries.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def make_celery(settings: Settings, name: str = "wabot") -> Celery:
    app = Celery(name)
    app.config_from_object("celeryconfig")
    app.conf.broker_url = broker_url(settings.redis_url)
    return app


def enqueue(app: Celery, task_name: str, payload: dict, countdown: float | None = None,
            task_id: str | None = None) -> None:
    """Publish one task to its queue. Returns once Redis holds it; raises kombu's OperationalError otherwise.
    `task_id` names the task (an accepted webhook's record, shared/queueing/accepted.py); Celery makes one otherwise."""
    app.send_task(task_name, kwargs={"payload": payload}, queue=TASK_QUEUES[task_name], countdown=countdown,
                  task_id=task_id, retry=True, retry_policy=PUBLISH_RETRY)
