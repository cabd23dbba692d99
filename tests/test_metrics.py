"""Metrics: a real stack (gunicorn with 2 workers, one Celery worker with its exporter, its own Redis) drives a few
turns, a failed send and a duplicate webhook; the web's and the worker's /metrics then show each counter and
histogram with the right values. Plus the pieces on their own: queue depth and age, access to /metrics."""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, start_web, start_worker
from devtools.devstack import start_redis
from helpers import AUTH, NUMBERS, inbound, new_user, wait_for
from shared import metrics
from shared.queueing import accepted, monitor
from shared.queueing.redis_conn import redis_client


def scrape(url: str, headers: dict | None = None) -> dict[tuple, float]:
    """{(sample name, frozenset of labels): value} of one scrape."""
    resp = requests.get(url, headers=headers or {}, timeout=5)
    resp.raise_for_status()
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    """Sum of the samples named `name` whose labels include `labels` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@pytest.fixture
def broker(data_dir, request):
    server = start_redis(data_dir / f"metrics-{request.node.name[:30]}-{os.getpid()}")
    yield server
    server.stop()


@pytest.fixture
def stack(stack_env, tenants, data_dir, broker):
    """gunicorn (2 workers) and one worker of every queue with its exporter, on a Redis of their own."""
    env = {**stack_env, "REDIS_URL": broker.url, "WORKER_METRICS_PORT": str(free_port())}
    web, url = start_web({**env, "WEB_CONCURRENCY": "2"}, data_dir / "metrics-web.log", free_port())
    worker = start_worker(env, data_dir / "metrics-worker.log", name="metrics")
    yield url, f"http://127.0.0.1:{env['WORKER_METRICS_PORT']}/metrics", worker
    worker.stop()
    web.stop()


def _post(url: str, body: dict) -> dict:
    resp = requests.post(f"{url}/webhooks/infobip", json=body, headers=AUTH, timeout=5)
    resp.raise_for_status()
    return resp.json()


def _replies(sandbox, user: str) -> list[dict]:
    return [r for r in sandbox.requests(path="/whatsapp/1/message/text") if (r["json"] or {}).get("to") == user]


def test_turns_a_failed_send_and_a_duplicate_are_counted_by_web_and_worker(stack, sandbox):
    web_url, worker_url, worker = stack
    started = time.time()
    users = [new_user() for _ in range(3)]
    texts = ["hello", "hello", "remember that my dog is called Rex"]  # the last one calls a tool
    bodies = [inbound(NUMBERS["alpha"], u, {"type": "TEXT", "text": t}) for u, t in zip(users, texts)]
    for body in bodies:
        assert _post(web_url, body)["accepted"] == 1
    assert _post(web_url, bodies[0])["duplicates"] == 1  # Infobip's retry of the first webhook: dropped
    refused = new_user()
    sandbox.script({"to": refused, "status": 400, "body": {"requestError": {"serviceException": {
        "messageId": "BAD_REQUEST", "text": "Bad request"}}}})
    assert _post(web_url, inbound(NUMBERS["alpha"], refused, {"type": "TEXT", "text": "hello"}))["accepted"] == 1
    wait_for(lambda: all(_replies(sandbox, u) for u in users + [refused]), 60, what="every reply posted")

    def worker_counts():
        samples = scrape(worker_url)
        done = value(samples, "wabot_sends_total", tenant="alpha") >= 4 and \
            value(samples, "wabot_turns_total", tenant="alpha") >= 4
        return samples if done else None
    w = wait_for(worker_counts, 30, what="the worker's counters")
    elapsed = time.time() - started

    # turns, their latency (receipt -> first send accepted: the refused one never got there), outcomes
    assert value(w, "wabot_turns_total", tenant="alpha", outcome="answered") == 4
    assert value(w, "wabot_turn_latency_seconds_count", tenant="alpha") == 3
    assert 0 < value(w, "wabot_turn_latency_seconds_sum", tenant="alpha") <= 3 * elapsed
    # sends by final status, Infobip's error by code, no retry for a 400
    assert value(w, "wabot_sends_total", tenant="alpha", status="sent") == 3
    assert value(w, "wabot_sends_total", tenant="alpha", status="failed") == 1
    assert value(w, "wabot_infobip_errors_total", tenant="alpha", http_status="400", code="BAD_REQUEST") == 1
    assert value(w, "wabot_send_retries_total", tenant="alpha") == 0
    # model calls of the mock provider, with their latency and tokens
    calls = value(w, "wabot_llm_calls_total", tenant="alpha", provider="mock", outcome="ok")
    assert calls >= 4
    assert value(w, "wabot_llm_call_duration_seconds_count", tenant="alpha", provider="mock") == calls
    assert value(w, "wabot_llm_tokens_total", tenant="alpha", kind="prompt") > 0
    assert value(w, "wabot_llm_tokens_total", tenant="alpha", kind="completion") > 0
    # tool calls by tool and outcome: the saved note
    assert value(w, "wabot_tool_calls_total", tenant="alpha", tool="upsert_item", outcome="ok") == 1
    assert not [k for k in w if k[0] == "wabot_tool_calls_total" and ("outcome", "error") in k[1]]
    # tasks: four messages stored (the duplicate never reached a worker), every task timed
    assert value(w, "wabot_tasks_total", task="wabot.inbound.handle_message", outcome="ok") == 4
    assert value(w, "wabot_task_duration_seconds_count", task="wabot.inbound.handle_message") == 4
    assert value(w, "wabot_tasks_total", task="wabot.outbound.send", outcome="ok") == 4

    web = scrape(web_url + "/metrics")
    assert value(web, "wabot_webhook_results_total", kind="inbound", outcome="accepted") == 4
    assert value(web, "wabot_webhook_results_total", kind="inbound", outcome="duplicate") == 1
    assert value(web, "wabot_enqueue_failures_total") == 0
    # both gunicorn workers' requests, summed (multiprocess mode): 5 webhooks
    assert value(web, "wabot_http_requests_total", endpoint="webhooks.infobip_webhook", status="200") == 5
    assert value(web, "wabot_http_request_duration_seconds_count", endpoint="webhooks.infobip_webhook") == 5
    # queues: nothing waits, one live worker per queue
    assert value(web, "wabot_workers_alive", queue="inbound") == 1
    assert value(web, "wabot_queue_depth", queue="inbound") == 0
    assert ("wabot_queue_oldest_age_seconds", frozenset({("queue", "outbound")})) in web
    # labels are bounded: no phone number and no message id anywhere
    text = requests.get(worker_url, timeout=5).text + requests.get(web_url + "/metrics", timeout=5).text
    assert not any(u in text for u in users + [refused])
    assert bodies[0]["results"][0]["messageId"] not in text
    # gunicorn's access lines are JSON with the request id
    access = [json.loads(line) for line in open(worker.log_path.parent / "metrics-web.log")
              if '"gunicorn.access"' in line]
    assert any(a["path"] == "/webhooks/infobip" and a["request_id"].startswith("req_") for a in access)


def test_queue_depth_and_oldest_age(broker):
    r = redis_client(broker.url)
    accepted.record(r, [accepted.Accepted("t-1", "wabot.inbound.handle_message", "inbound", {})], 1000.0, 60)
    r.lpush("inbound", json.dumps({"headers": {"id": "t-1"}}))
    r.lpush("inbound", json.dumps({"headers": {"id": "t-2"}}))
    r.lpush("outbound", json.dumps({"headers": {"id": "s-1"}}))  # no record: aged from the first look at it
    first = monitor.snapshot(r, ["inbound", "outbound", "events"], 1030.0)
    assert first["inbound"] == monitor.QueueState(2, 30.0)  # the oldest (tail) was accepted at 1000
    assert first["outbound"] == monitor.QueueState(1, 0.0)
    assert first["events"] == monitor.QueueState(0, 0.0)
    assert monitor.snapshot(r, ["outbound"], 1042.5)["outbound"] == monitor.QueueState(1, 12.5)
    r.rpop("outbound")
    r.lpush("outbound", json.dumps({"headers": {"id": "s-2"}}))
    assert monitor.snapshot(r, ["outbound"], 1050.0)["outbound"].oldest_age == 0.0  # a new tail: a new clock

    monitor.beat(r, ["inbound", "events"], "w1@h", 1008.0)
    monitor.beat(r, ["inbound"], "w2@h", 1010.0)
    assert monitor.alive(r, ["inbound", "events", "outbound"], 1020.0) == {"inbound": 2, "events": 1, "outbound": 0}
    assert monitor.alive(r, ["inbound", "events"], 1024.0) == {"inbound": 1, "events": 0}
    monitor.stop(r, ["inbound"], "w2@h")
    assert monitor.alive(r, ["inbound"], 1011.0) == {"inbound": 1}


def test_metrics_endpoint_needs_the_token_when_one_is_set(settings, tenants, broker):
    from ingress.app import create_app

    open_app = create_app(replace(settings, redis_url=broker.url), tenants, configure_logs=False).test_client()
    resp = open_app.get("/metrics")  # the test client comes from 127.0.0.1: a private address
    assert resp.status_code == 200 and "wabot_queue_depth" in resp.text
    assert open_app.get("/metrics", environ_base={"REMOTE_ADDR": "93.184.216.34"}).status_code == 403

    locked = create_app(replace(settings, redis_url=broker.url, metrics_token="s3cret"), tenants,
                        configure_logs=False).test_client()
    assert locked.get("/metrics").status_code == 403
    assert locked.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    resp = locked.get("/metrics", headers={"Authorization": "Bearer s3cret"},
                      environ_base={"REMOTE_ADDR": "93.184.216.34"})
    assert resp.status_code == 200 and "wabot_http_requests_total" in resp.text


def test_labels_stay_bounded():
    assert metrics.bounded("alpha") == "alpha"
    assert metrics.bounded(None) == "none"
    assert len(metrics.bounded("x" * 500)) == 64
    assert metrics.bounded('a"b\nc{d}') == "a_b_c_d_"
