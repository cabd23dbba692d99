"""gunicorn settings for the ingress.

Requests only validate and enqueue (Redis, a few milliseconds), but clients may be slow: a sync worker is held by
one connection for as long as that client takes to send its headers or body, so two slow-header connections
used to stall every valid webhook. The default worker class is therefore `gevent` (a greenlet per connection):
a slow or idle client costs a greenlet, not a worker, and valid webhooks keep their millisecond answers.

- `WEB_WORKER_CLASS` (default `gevent`): gunicorn worker class; `sync` only behind a buffering reverse proxy.
- `WEB_WORKER_CONNECTIONS` (default 1000): connections one worker process holds at once (gevent/gthread).
- `WEB_KEEPALIVE` (default 5 s, at least 1): how long an idle keep-alive connection stays open and, with gevent,
  also how long a client may take to send a request line and headers before it is disconnected.
- `WEB_CONCURRENCY` (default 2): worker processes; `APP_HOST`/`APP_PORT`: bind address.

Capacity, measured (bench/bench_ingress.py, see bench/README.md; 2 gevent workers on a 2-core machine shared with
other jobs, INFO logs, embedded Redis): about 1,200-1,900 webhooks/s in a closed loop of 16 connections at ~0.9 ms
of web CPU per webhook (each one dedupe-claimed, recorded and queued in one Redis script), and a steady 1,000/s
open loop is kept up with. A bare Flask + marshmallow + LPUSH app under the same settings does 2,200-3,300/s.
(An earlier "about 4,300 req/s" here was a bare sync app's figure, never this ingress: it measured 240-600/s
before the events and publishing changes of issue 11.)

gevent monkey-patches the worker process before the app is imported (gunicorn's GeventWorker.init_process), so
redis-py/kombu sockets and psycopg's waits (used only by the health check) yield to other greenlets.

Metrics: every worker writes its counters to one directory made fresh at each start (PROMETHEUS_MULTIPROC_DIR,
given to the workers through `raw_env` before they import prometheus_client; removed at exit), and a scrape of
`/metrics` on any worker sums all of them (ingress/metrics.py). Counters of a restarted worker stay in the sum.

Access log: one JSON line per request on stderr (method, path without the query, status, bytes, duration, and
the request id the app sets as X-Request-Id), so `grep req_...` finds the request's access line too.
"""
import shutil
import sys
import tempfile

from shared.config.settings import current_settings
from shared.errors import ConfigError

try:
    web = current_settings().web  # the same settings the app reads (and every error of them at once)
except ConfigError as exc:  # one readable line instead of gunicorn's traceback, as ingress/wsgi.py does
    print(f"configuration error: {exc}", file=sys.stderr)
    sys.exit(2)

bind = f"{web.host}:{web.port}"
workers = web.concurrency
worker_class = web.worker_class
worker_connections = web.worker_connections
keepalive = web.keepalive  # at least 1 s (settings): 0 would also turn off gevent's deadline for reading headers
timeout = 30  # a worker silent this long is restarted (with gevent: its event loop was blocked that long)
graceful_timeout = 20
accesslog = "-"
errorlog = "-"
access_log_format = ('{"time": "%(t)s", "level": "INFO", "name": "gunicorn.access", "message": "%(m)s %(U)s %(s)s", '
                     '"method": "%(m)s", "path": "%(U)s", "status": %(s)s, "bytes": "%(B)s", "duration_ms": %(M)s, '
                     '"request_id": "%({x-request-id}o)s"}')
metrics_dir = tempfile.mkdtemp(prefix="wabot-web-metrics-")
raw_env = [f"PROMETHEUS_MULTIPROC_DIR={metrics_dir}"]  # set by the master before it forks any worker


def on_exit(server) -> None:
    shutil.rmtree(metrics_dir, ignore_errors=True)


# gunicorn >= 25 opens a control socket at one fixed path per user ($HOME/.gunicorn/gunicorn.ctl): two instances on
# a host would take each other's, and nothing here uses it. (Older gunicorn ignores the unknown setting.)
control_socket_disable = True
preload_app = False  # the app must be imported after gevent has patched the worker process (see above)
