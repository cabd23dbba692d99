"""What the webhook answers 2xx for is stored and answered in the end, whatever process dies when (issue 8):
the accepted-work records (shared/queueing/accepted.py), their re-drive sweep, and SIGKILLs of the inbound worker under a
backlog. Each test has its own Redis broker, so only its own workers take its tasks."""
from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import replace

import pytest

from conftest import start_worker
from helpers import AUTH, NUMBERS, inbound, new_user, wait_for
from shared.queueing import accepted
from devtools.devstack import start_redis
from shared.queueing.redis_conn import redis_client
from shared.queueing.tasks import TASK_HANDLE_INBOUND, TASK_RECOVER, TASK_REDRIVE_ACCEPTED, enqueue, make_celery

KILLS = int(os.environ.get("WABOT_KILLS", "4"))  # `WABOT_KILLS=12 make test` for the long run


@pytest.fixture
def broker(data_dir, request):
    server = start_redis(data_dir / f"broker-{request.node.name[:40]}-{os.getpid()}")
    yield server
    server.stop()


def replies_to(sandbox, user) -> list[dict]:
    return [r["json"] for r in sandbox.requests(path="/whatsapp/1/message/text") if r["json"]["to"] == user]


# ---------------------------------------------------------------- the records and the sweep, on a real Redis

def _item(n: int) -> accepted.Accepted:
    return accepted.Accepted(f"task-{n}", TASK_HANDLE_INBOUND, "inbound", {"tenant_id": "alpha", "message_id": f"m{n}"})


def test_only_lost_work_is_published_again_with_doubling_waits_then_dead_lettered(broker):
    r = redis_client(broker.url)
    published: list[str] = []
    publish = lambda task, payload, task_id: published.append(task_id)  # noqa: E731
    accepted.record(r, [_item(1), _item(2), _item(3)], now=1000.0, first_after=60)
    # task-2 still waits in its queue (a backlog, not a loss); task-3 is done and forgotten by its worker
    r.lpush("inbound", json.dumps({"headers": {"id": "task-2"}, "body": ""}))
    accepted.forget(r, ["task-3"])

    assert accepted.redrive(r, publish, 1059.0, first_after=60, max_redrives=2).published == []  # not due yet
    out = accepted.redrive(r, publish, 1060.0, first_after=60, max_redrives=2)
    assert published == ["task-1"] and out.still_waiting == 1
    assert accepted.redrive(r, publish, 1100.0, first_after=60, max_redrives=2).published == []  # waits 120 s now
    accepted.redrive(r, publish, 1180.0, first_after=60, max_redrives=2)
    assert published == ["task-1", "task-1"]
    out = accepted.redrive(r, publish, 1180.0 + 240, first_after=60, max_redrives=2)
    assert out.dead == ["task-1"] and published == ["task-1", "task-1"]
    assert json.loads(r.hget(accepted.DEAD, "task-1"))["payload"]["message_id"] == "m1"  # kept for an operator
    assert r.hget(accepted.RECORDS, "task-1") is None and r.hget(accepted.RECORDS, "task-2") is not None


def test_a_record_forgotten_during_a_sweep_is_not_brought_back(broker):
    r = redis_client(broker.url)
    accepted.record(r, [_item(7)], now=0.0, first_after=1)
    out = accepted.redrive(r, lambda *_: accepted.forget(r, ["task-7"]), 5.0, first_after=1, max_redrives=3)
    assert out.published == ["task-7"]
    assert r.hget(accepted.RECORDS, "task-7") is None and r.zscore(accepted.DUE, "task-7") is None


def test_a_refused_batch_leaves_no_record(settings, tenants, broker):
    from ingress.app import create_app

    client = create_app(replace(settings, redis_url=broker.url), tenants, configure_logs=False).test_client()
    ok = inbound(NUMBERS["alpha"], new_user(), {"type": "TEXT", "text": "fine"})
    report_on_inbound_url = {"results": ok["results"] + [{"messageId": "x.1", "status": {"groupName": "DELIVERED"}}]}
    assert client.post("/webhooks/infobip/status", json=report_on_inbound_url, headers=AUTH).status_code == 400
    assert redis_client(broker.url).hlen(accepted.RECORDS) == 0
    assert client.post("/webhooks/infobip", json=ok, headers=AUTH).status_code == 200
    assert redis_client(broker.url).hlen(accepted.RECORDS) == 1  # until a worker has stored it


# ---------------------------------------------------------------- end to end, with real workers

def _sweep_until(celery, check, timeout: float, what: str):
    """Run the sweeps every second (celery beat's job in production) until `check()` holds."""
    def step():
        enqueue(celery, TASK_REDRIVE_ACCEPTED, {})
        enqueue(celery, TASK_RECOVER, {})
        return check()
    return wait_for(step, timeout=timeout, interval=1.0, what=what)


def test_tasks_lost_by_the_broker_are_published_again_and_answered_once(stack_env, settings, tenants, sandbox, db,
                                                                        data_dir, broker):
    """The loss a SIGKILL between kombu's BRPOP and its unacked bookkeeping causes, made certain: the accepted
    tasks vanish from the queue before any worker saw them. The sweep publishes them again."""
    from ingress.app import create_app

    client = create_app(replace(settings, redis_url=broker.url, accepted_redrive_seconds=1), tenants,
                        configure_logs=False).test_client()
    users = [new_user() for _ in range(5)]
    bodies = [inbound(NUMBERS["alpha"], u, {"type": "TEXT", "text": f"hello from {u}"}) for u in users]
    for body in bodies:
        assert client.post("/webhooks/infobip", json=body, headers=AUTH).status_code == 200
    r = redis_client(broker.url)
    assert r.llen("inbound") == 5
    r.delete("inbound")  # popped by a worker that died at once

    env = {**stack_env, "REDIS_URL": broker.url, "ACCEPTED_REDRIVE_SECONDS": "1"}
    worker = start_worker(env, data_dir / "redrive-worker.log", name="redrive")
    try:
        celery = make_celery(replace(settings, redis_url=broker.url))
        _sweep_until(celery, lambda: all(replies_to(sandbox, u) for u in users), 60, "every lost message answered")
        time.sleep(2.0)  # room for a wrong second reply
        assert [len(replies_to(sandbox, u)) for u in users] == [1] * 5
        with db("alpha") as conn:
            stored = conn.execute("SELECT count(*) AS n FROM messages WHERE infobip_message_id = ANY(%s)",
                                  ([b["results"][0]["messageId"] for b in bodies],)).fetchone()["n"]
        assert stored == 5
        wait_for(lambda: r.hlen(accepted.RECORDS) == 0, what="the records forgotten once stored")
    finally:
        worker.stop()


def test_inbound_workers_killed_again_and_again_under_a_backlog_lose_nothing(stack_env, settings, tenants, sandbox,
                                                                             data_dir, broker):
    """SIGKILL the inbound worker right after it starts (some within a second of "ready"), KILLS times, with a
    backlog waiting: every accepted message is answered, exactly once."""
    from ingress.app import create_app

    client = create_app(replace(settings, redis_url=broker.url, accepted_redrive_seconds=2), tenants,
                        configure_logs=False).test_client()
    users = [new_user() for _ in range(40)]
    for u in users:
        body = inbound(NUMBERS["alpha"], u, {"type": "TEXT", "text": "are you there?"})
        assert client.post("/webhooks/infobip", json=body, headers=AUTH).status_code == 200
    env = {**stack_env, "REDIS_URL": broker.url, "ACCEPTED_REDRIVE_SECONDS": "2", "CELERY_VISIBILITY_TIMEOUT": "4",
           "CELERY_RESTORE_INTERVAL": "1"}
    rng = random.Random(8)
    for k in range(KILLS):
        doomed = start_worker(env, data_dir / f"doomed-{k}.log", queues="inbound", name=f"doomed{k}")
        time.sleep(rng.uniform(0.0, 1.0) if k % 2 == 0 else rng.uniform(1.0, 2.5))
        os.killpg(doomed.popen.pid, signal.SIGKILL)
        doomed.popen.wait(10)
        doomed.stop()
    survivor = start_worker(env, data_dir / "survivor.log", name="survivor")
    try:
        celery = make_celery(replace(settings, redis_url=broker.url))
        _sweep_until(celery, lambda: all(replies_to(sandbox, u) for u in users), 120, "every message answered")
        time.sleep(5.0)  # room for a wrong second reply (restored tasks, re-driven copies)
        per_user = {u: {m["messageId"] for m in replies_to(sandbox, u)} for u in users}
        assert [len(ids) for ids in per_user.values()] == [1] * len(users), per_user
    finally:
        survivor.stop()
