"""Task names, queues and the Celery app both sides share.

The ingress publishes by task *name* (it never imports the workers); the workers register the same names.
One queue per kind of work so each pool scales on its own.
"""
from __future__ import annotations

import base64
import threading
import uuid
from contextlib import contextmanager
from typing import Iterator

from celery import Celery
from kombu.serialization import dumps as kombu_dumps
from kombu.utils import json as kombu_json

from shared.config.settings import Settings, current_settings
from shared.queueing.celery_config import LazyCeleryConfig, celery_config

QUEUE_INBOUND = "inbound"      # LLM turns: slow, many in flight (thread pool)
QUEUE_OUTBOUND = "outbound"    # Infobip sends
QUEUE_EVENTS = "events"        # delivery and seen reports
QUEUE_SCHEDULED = "scheduled"  # celery beat work (reminders)
QUEUE_KNOWLEDGE = "knowledge"  # knowledge documents embedded in batches, URL fetches, reindexes: long, few
QUEUE_SUMMARIES = "summaries"  # rolling conversation summaries: a model call each, never in a reply's way
QUEUES = (QUEUE_INBOUND, QUEUE_OUTBOUND, QUEUE_EVENTS, QUEUE_SCHEDULED, QUEUE_KNOWLEDGE, QUEUE_SUMMARIES)

TASK_HANDLE_INBOUND = "wabot.inbound.handle_message"
TASK_RUN_TURN = "wabot.inbound.run_turn"
TASK_SEND = "wabot.outbound.send"
TASK_NOTIFY_HANDOFF = "wabot.outbound.notify_handoff"  # the business's signed webhook (shared.handoff.webhook)
TASK_APPLY_REPORT = "wabot.events.apply_report"
TASK_DISPATCH_REMINDERS = "wabot.scheduled.dispatch_reminders"
TASK_RECOVER = "wabot.scheduled.recover_stalled"
TASK_REDRIVE_ACCEPTED = "wabot.scheduled.redrive_accepted"
TASK_BACKFILL_EMBEDDINGS = "wabot.scheduled.backfill_embeddings"
TASK_RELEASE_IDLE_HANDOFFS = "wabot.scheduled.release_idle_handoffs"
TASK_KNOWLEDGE_JOB = "wabot.knowledge.run_job"  # one knowledge_jobs row (shared/knowledge/jobs.py)
TASK_UPDATE_SUMMARY = "wabot.summaries.update"  # one user's summary (shared/conversation/summaries.py)

TASK_QUEUES = {
    TASK_HANDLE_INBOUND: QUEUE_INBOUND,
    TASK_RUN_TURN: QUEUE_INBOUND,
    TASK_SEND: QUEUE_OUTBOUND,
    TASK_NOTIFY_HANDOFF: QUEUE_OUTBOUND,
    TASK_APPLY_REPORT: QUEUE_EVENTS,
    TASK_DISPATCH_REMINDERS: QUEUE_SCHEDULED,
    TASK_RECOVER: QUEUE_SCHEDULED,
    TASK_REDRIVE_ACCEPTED: QUEUE_SCHEDULED,
    TASK_BACKFILL_EMBEDDINGS: QUEUE_SCHEDULED,
    TASK_RELEASE_IDLE_HANDOFFS: QUEUE_SCHEDULED,
    TASK_KNOWLEDGE_JOB: QUEUE_KNOWLEDGE,
    TASK_UPDATE_SUMMARY: QUEUE_SUMMARIES,
}

# Publishing must fail fast when Redis is down: the ingress then answers 503 and Infobip retries.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


class PublishInTransaction(RuntimeError):
    """A task was about to be published while a transaction that may still roll back was open."""


_open = threading.local()  # how many unit-of-work transactions (shared/db/unit_of_work.py) this thread has open


@contextmanager
def publishing_refused() -> Iterator[None]:
    """Marks a transaction open on this thread for as long as the block runs: `enqueue` refuses meanwhile."""
    _open.depth = getattr(_open, "depth", 0) + 1
    try:
        yield
    finally:
        _open.depth -= 1


def refuse_inside_transaction(task_name: str) -> None:
    """Raise when a unit-of-work transaction is open on this thread: its work is not committed yet."""
    if getattr(_open, "depth", 0):
        raise PublishInTransaction(f"task {task_name!r} published inside an open transaction; "
                                   "register it with publish_after_commit instead")


def make_celery(settings: Settings | None, name: str = "wabot") -> Celery:
    """A Celery app configured from `settings`; with None, from this process's settings when Celery first reads its
    configuration (the workers' app is made at import, which must need no environment)."""
    app = Celery(name)
    app.config_from_object(LazyCeleryConfig(current_settings) if settings is None else celery_config(settings))
    return app


def enqueue(app: Celery, task_name: str, payload: dict, countdown: float | None = None,
            task_id: str | None = None) -> None:
    """Publish one task to its queue. Returns once Redis holds it; raises kombu's OperationalError otherwise.
    `task_id` names the task (an accepted webhook's record, shared/queueing/accepted.py); Celery makes one otherwise.
    Refuses (PublishInTransaction) while a unit-of-work transaction is open on this thread (shared/db/unit_of_work.py).
    """
    refuse_inside_transaction(task_name)
    app.send_task(task_name, kwargs={"payload": payload}, queue=TASK_QUEUES[task_name], countdown=countdown,
                  task_id=task_id, retry=True, retry_policy=PUBLISH_RETRY)


def task_message(app: Celery, task_name: str, payload: dict, task_id: str) -> tuple[str, str]:
    """(queue, message): the task exactly as kombu's Redis transport would LPUSH it for `app.send_task` (Celery's
    task protocol 2, JSON, base64 body), built without a producer, so the ingress can push it in the same Redis
    script as its dedupe claim and accepted record: one round trip per webhook (shared/queueing/dedupe.py).
    tests/test_ingress_publish.py compares it with what `enqueue` publishes. The kwargs are not repr'd into the headers
    (Celery's `kwargsrepr`, shown by task events and Flower): a short label names the task instead of copying the
    user's message."""
    queue = TASK_QUEUES[task_name]
    msg = app.amqp.as_task_v2(task_id, task_name, kwargs={"payload": payload}, argsrepr="()",
                              kwargsrepr=_label(payload), reply_to=app.thread_oid, ignore_result=None)
    content_type, content_encoding, body = kombu_dumps(msg.body, serializer="json")
    properties = {**msg.properties, "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": queue},
                  "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}
    message = {"body": base64.b64encode(body.encode(content_encoding)).decode("ascii"),
               "content-encoding": content_encoding, "content-type": content_type, "headers": msg.headers,
               "properties": properties}
    return queue, kombu_json.dumps(message)


def _label(payload: dict) -> str:
    return f"{{'payload': <tenant {payload.get('tenant_id')} message {payload.get('message_id')}>}}"


def send_payload(tenant_id: str, outbound_id: int, request_id: str | None, message_id: str | None = None) -> dict:
    """The payload of the send task of one outbox row."""
    payload = {"tenant_id": tenant_id, "outbound_id": int(outbound_id), "request_id": request_id}
    if message_id:
        payload["message_id"] = message_id
    return payload
