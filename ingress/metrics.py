"""`GET /metrics` (Prometheus text format) and the per-request counters of the ingress.

gunicorn runs several worker processes and a scrape reaches one of them, so the ingress uses prometheus_client's
multiprocess mode: ingress/gunicorn.conf.py gives every worker one fresh directory (PROMETHEUS_MULTIPROC_DIR) and
any worker's `/metrics` sums the files of all of them. Without that directory (the Flask test client, `flask run`)
the process's own registry is served.

Also served here, read from Redis at scrape time: the depth and oldest age of every queue and the live workers
per queue (shared/queueing/monitor.py). Per request the cost is two clock reads, a counter and a histogram (a few
microseconds, no Redis).

Access: with METRICS_TOKEN set, only `Authorization: Bearer <METRICS_TOKEN>`; without it, only clients on a
loopback or private address (Prometheus next to the app; behind a reverse proxy every client looks private, so
set the token there).
"""
from __future__ import annotations

import hmac
import ipaddress
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ingress.errors import error_response
from ingress.state import state
from shared import metrics
from shared.queueing import monitor
from shared.queueing.tasks import QUEUES

bp = Blueprint("metrics", __name__)
MULTIPROCESS = values.ValueClass is not values.MutexValue  # PROMETHEUS_MULTIPROC_DIR was set before the import


class QueueCollector:
    """Queue depth, oldest task age and live workers, from Redis, once per scrape."""

    def __init__(self, redis):
        self.redis = redis

    def collect(self):
        now = time.time()
        depth = GaugeMetricFamily(metrics.QUEUE_DEPTH, "Tasks waiting in the queue", labels=["queue"])
        age = GaugeMetricFamily(metrics.QUEUE_OLDEST_AGE, "Age of the oldest task waiting in the queue",
                                labels=["queue"])
        workers = GaugeMetricFamily(metrics.WORKERS_ALIVE, "Workers with a live heartbeat consuming the queue",
                                    labels=["queue"])
        try:
            states = monitor.snapshot(self.redis, QUEUES, now)
            live = monitor.alive(self.redis, QUEUES, now)
        except Exception:  # Redis away: the scrape still answers; the missing series are the signal
            return
        for queue in QUEUES:
            depth.add_metric([queue], states[queue].depth)
            age.add_metric([queue], states[queue].oldest_age)
            workers.add_metric([queue], live[queue])
        yield from (depth, age, workers)


def _allowed() -> bool:
    token = state().settings.metrics_token
    if token:
        presented = request.headers.get("Authorization", "")
        return hmac.compare_digest(presented.encode(), f"Bearer {token}".encode())
    try:
        address = ipaddress.ip_address((request.remote_addr or "").split("%", 1)[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_private


def exposition(redis) -> bytes:
    """Every metric of the ingress processes, then the queues'."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    queues = CollectorRegistry(auto_describe=False)
    queues.register(QueueCollector(redis))
    return generate_latest(registry) + generate_latest(queues)


@bp.get("/metrics")
def serve_metrics():
    if not _allowed():
        return error_response(403, "forbidden", "metrics need METRICS_TOKEN or a private network")
    return Response(exposition(state().redis), mimetype=None, content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    @app.before_request
    def _started() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response):
        endpoint = request.endpoint or "unmatched"
        metrics.HTTP_REQUESTS.labels(endpoint, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            metrics.HTTP_LATENCY.labels(endpoint).observe(time.perf_counter() - started)
        return response

    app.register_blueprint(bp)
