"""The worker side of metrics: an exporter per worker process, and heartbeats per consumed queue.

A Celery worker here runs a thread pool: one process, whose tasks all record into prometheus_client's in-process
registry (thread-safe). With WORKER_METRICS_PORT set, the process serves it on WORKER_METRICS_HOST (default
127.0.0.1) at that port, `/metrics`: give every worker process its own port (the Procfile and compose do), and
let Prometheus scrape each. The exporter has no token: keep it on loopback or a private network.

Heartbeats: every HEARTBEAT_SECONDS a thread writes "alive" for each queue the worker consumes
(shared/queueing/monitor.py); a clean stop removes them, so `/ready` turns 503 at once; a killed worker's expire
after STALE_SECONDS.
"""
from __future__ import annotations

import logging
import threading
import time

from celery import signals
from prometheus_client import start_http_server

from shared.config.settings import current_settings
from shared.queueing import monitor
from shared.queueing.redis_conn import redis_client

log = logging.getLogger("workers.metrics")


class Heartbeat:
    """Beats for `queues` as `node` until stopped; Redis away costs a warning, never the worker."""

    def __init__(self, redis_url: str, queues: list[str], node: str, interval: float = monitor.HEARTBEAT_SECONDS):
        self.redis = redis_client(redis_url)
        self.queues, self.node, self.interval = queues, node, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                monitor.beat(self.redis, self.queues, self.node, time.time())
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("heartbeat not written", extra={"error_type": exc.__class__.__name__})
                failing = True
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        try:
            monitor.stop(self.redis, self.queues, self.node)
        except Exception:
            pass


_heartbeat: Heartbeat | None = None


def start_exporter(port: int, host: str) -> bool:
    """Serve this process's registry on host:port; a taken port is logged, not fatal."""
    if not port:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.error("metrics exporter not started", extra={"port": port, "error": str(exc)})
        return False
    log.info("metrics exporter listening", extra={"port": port, "host": host})
    return True


@signals.worker_init.connect
def _exporter(**_kwargs) -> None:
    settings = current_settings()
    start_exporter(settings.worker_metrics_port, settings.worker_metrics_host)


@signals.worker_ready.connect
def _start_heartbeat(sender=None, **_kwargs) -> None:
    global _heartbeat
    queues = sorted(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    _heartbeat = Heartbeat(current_settings().redis_url, queues, sender.hostname).start()


@signals.worker_shutdown.connect
def _stop_heartbeat(**_kwargs) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
