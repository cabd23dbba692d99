"""Readiness that means something: `/ready` is 503 while a queue of READY_QUEUES has no live worker, turns 503 within
30 s of its worker stopping (at once on a clean stop, after the heartbeat's 15 s on a SIGKILL) and 200 again once a
worker is back. Liveness (`/health`) stays trivial."""
from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import pytest

from conftest import start_worker
from devtools.devstack import start_redis
from helpers import wait_for


@pytest.fixture
def broker(data_dir, request):
    server = start_redis(data_dir / f"ready-{request.node.name[:30]}-{os.getpid()}")
    yield server
    server.stop()


def _status(client) -> int:
    return client.get("/ready").status_code


def test_ready_follows_the_inbound_worker(stack_env, settings, tenants, data_dir, broker):
    from ingress.app import create_app

    client = create_app(replace(settings, redis_url=broker.url, ready_queues=("inbound",)), tenants,
                        configure_logs=False).test_client()
    env = {**stack_env, "REDIS_URL": broker.url}
    resp = client.get("/ready")
    assert resp.status_code == 503 and resp.get_json()["queues_without_workers"] == ["inbound"]
    assert client.get("/health").status_code == 200  # liveness does not care

    worker = start_worker(env, data_dir / "ready-worker-1.log", queues="inbound", name="ready1")
    try:
        wait_for(lambda: _status(client) == 200, 15, what="ready once the inbound worker beats")
        body = client.get("/ready").get_json()
        assert body["queues"]["inbound"]["workers"] == 1 and body["queues"]["inbound"]["depth"] == 0
        assert body["queues"]["outbound"]["workers"] == 0  # reported, not required here
        stopped = time.monotonic()
        worker.stop(signal.SIGTERM)
        wait_for(lambda: _status(client) == 503, 30, what="503 after a clean stop")
        assert time.monotonic() - stopped < 30
    finally:
        worker.stop()

    worker = start_worker(env, data_dir / "ready-worker-2.log", queues="inbound", name="ready2")
    try:
        wait_for(lambda: _status(client) == 200, 15, what="ready again once a worker is back")
        killed = time.monotonic()
        worker.stop(signal.SIGKILL)  # no goodbye: its heartbeat goes stale
        wait_for(lambda: _status(client) == 503, 30, interval=0.5, what="503 after a SIGKILL")
        assert time.monotonic() - killed < 30
    finally:
        worker.stop()


def test_ready_reports_waiting_work(settings, tenants, broker):
    """A queue's depth and the age of its oldest task are in the body (no worker needed for that)."""
    import json

    from ingress.app import create_app
    from shared.queueing.redis_conn import redis_client

    client = create_app(replace(settings, redis_url=broker.url, ready_queues=()), tenants,
                        configure_logs=False).test_client()
    redis_client(broker.url).lpush("outbound", json.dumps({"headers": {"id": "x"}}))
    resp = client.get("/ready")
    assert resp.status_code == 200  # no queue required
    assert resp.get_json()["queues"]["outbound"]["depth"] == 1
    assert resp.get_json()["queues"]["outbound"]["oldest_age_seconds"] == 0.0  # first seen just now
