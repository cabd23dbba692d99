"""The ingress queues its tasks without kombu's producer (shared/queueing/tasks.py task_message, pushed by the
claim script in shared/queueing/dedupe.py): the message must stay the one kombu publishes, and the script must
take each messageId once, with its record, all in one go."""
from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from devtools.devstack import start_redis
from shared.queueing import accepted, dedupe
from shared.queueing.redis_conn import redis_client
from shared.queueing.tasks import TASK_APPLY_REPORT, TASK_HANDLE_INBOUND, enqueue, make_celery, task_message


@pytest.fixture
def broker(data_dir, request):
    server = start_redis(data_dir / f"broker-{request.node.name[:40]}-{os.getpid()}")
    yield server
    server.stop()


def _differences(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}" for k in set(a) ^ set(b)]
        return out + [d for k in set(a) & set(b) for d in _differences(a[k], b[k], f"{path}.{k}")]
    return [] if a == b else [path]


@pytest.mark.parametrize("task_name", [TASK_HANDLE_INBOUND, TASK_APPLY_REPORT])
def test_the_pushed_message_is_the_one_kombu_publishes(settings, broker, task_name):
    celery = make_celery(replace(settings, redis_url=broker.url))
    payload = {"tenant_id": "alpha", "message_id": "m1", "result": {"text": "héllo \u2603"}}
    enqueue(celery, task_name, payload, task_id="t-1")
    r = redis_client(broker.url)
    queue = "inbound" if task_name == TASK_HANDLE_INBOUND else "events"
    published = json.loads(r.rpop(queue))
    pushed_queue, pushed = task_message(celery, task_name, payload, "t-1")
    assert pushed_queue == queue
    assert sorted(_differences(published, json.loads(pushed))) == [".headers.kwargsrepr", ".properties.delivery_tag"]
    assert "héllo" not in json.loads(pushed)["headers"]["kwargsrepr"]  # the user's text stays out of the headers


def test_the_script_takes_each_message_once_with_its_record(settings, broker):
    celery = make_celery(replace(settings, redis_url=broker.url))
    r = redis_client(broker.url)

    def item(task_id, message_id, claimed=True):
        payload = {"tenant_id": "alpha", "message_id": message_id}
        queue, message = task_message(celery, TASK_HANDLE_INBOUND, payload, task_id)
        return accepted.Accepted(task_id, TASK_HANDLE_INBOUND, queue, payload), (
            dedupe.key("alpha", message_id) if claimed else None), message

    batch = [item("a", "m1"), item("b", "m2"), item("c", "m1"), item("d", "m1", claimed=False)]
    assert dedupe.claim_record_push(r, batch, now=100.0, first_after=60) == [True, True, False, True]
    assert dedupe.claim_record_push(r, [item("e", "m2")], now=101.0, first_after=60) == [False]
    assert sorted(json.loads(m)["headers"]["id"] for m in r.lrange("inbound", 0, -1)) == ["a", "b", "d"]
    assert sorted(k.decode() for k in r.hkeys(accepted.RECORDS)) == ["a", "b", "d"]
    assert r.zscore(accepted.DUE, "a") == 160.0
    assert json.loads(r.hget(accepted.RECORDS, "b"))["payload"]["message_id"] == "m2"
