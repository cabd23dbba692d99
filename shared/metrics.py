"""Prometheus metrics: every metric the bot exports, defined once, and small recording functions.

Labels are bounded: tenant ids (from tenants.yaml), queue, task and tool names (from the code or the tenants file),
providers and models (configured), statuses and outcomes (fixed sets). Never a phone number, a message id or a
request id. `tenant` defaults to the tenant bound to the running request or task (shared/log.py).

Processes: gunicorn's workers share one multiprocess directory (PROMETHEUS_MULTIPROC_DIR, set by
ingress/gunicorn.conf.py before prometheus_client is imported) and `GET /metrics` of any of them sums every
worker (ingress/metrics.py). Each Celery worker process (thread pool: one process) keeps its metrics in its own
registry and serves them on its own port (`WORKER_METRICS_PORT`, workers/metrics.py). The names are listed in
`EXPORTED` (tests check that the alert rules and the dashboard name only these).
"""
from __future__ import annotations

import re
import time
from typing import Any, Callable

from prometheus_client import Counter, Gauge, Histogram

from shared import log as logctx

NS = "wabot"

# ---------------------------------------------------------------- ingress (gunicorn; multiprocess)
HTTP_REQUESTS = Counter(f"{NS}_http_requests_total", "HTTP requests answered by the ingress, by route and status",
                        ["endpoint", "status"])
HTTP_LATENCY = Histogram(f"{NS}_http_request_duration_seconds", "Time the ingress took to answer, by route",
                         ["endpoint"],
                         buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
WEBHOOK_RESULTS = Counter(f"{NS}_webhook_results_total",
                          "Results of Infobip webhooks: accepted (queued), duplicate (dropped), ignored (no tenant)",
                          ["kind", "outcome"])
ENQUEUE_FAILURES = Counter(f"{NS}_enqueue_failures_total",
                           "Tasks Redis did not take: webhook batches answered 503, publishes kept for a retry",
                           ["source"])

# ---------------------------------------------------------------- turns, tools, model calls (inbound worker)
TURN_LATENCY = Histogram(f"{NS}_turn_latency_seconds",
                         "From the webhook's receipt of a message to Infobip accepting the first part of its reply",
                         ["tenant"], buckets=(.25, .5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300, 900))
TURNS = Counter(f"{NS}_turns_total", "Turns run, by outcome (answered, no_reply, retried, failed)",
                ["tenant", "outcome"])
TOOL_CALLS = Counter(f"{NS}_tool_calls_total", "Tool calls of the model, by tool and outcome (ok, error)",
                     ["tenant", "tool", "outcome"])
LLM_CALLS = Counter(f"{NS}_llm_calls_total", "Model calls, by provider, model and outcome (ok, error)",
                    ["tenant", "provider", "model", "outcome"])
LLM_LATENCY = Histogram(f"{NS}_llm_call_duration_seconds", "Duration of model calls", ["tenant", "provider", "model"],
                        buckets=(.05, .1, .25, .5, 1, 2, 3, 5, 10, 20, 30, 60, 120))
LLM_TOKENS = Counter(f"{NS}_llm_tokens_total", "Tokens of model calls, by kind (prompt, completion)",
                     ["tenant", "provider", "model", "kind"])
BUDGET_USED = Gauge(f"{NS}_llm_budget_used_ratio",
                    "Tokens used today (tenant-local day) over the tenant's daily_token_budget", ["tenant"])
TOKENS_TODAY = Gauge(f"{NS}_llm_tokens_today", "Tokens used today (tenant-local day)", ["tenant"])

# ---------------------------------------------------------------- sends and reports (outbound, events workers)
SENDS = Counter(f"{NS}_sends_total", "Send tasks by result (sent, failed, skipped, retry, waiting, busy)",
                ["tenant", "status"])
SEND_RETRIES = Counter(f"{NS}_send_retries_total", "Infobip posts that failed and will be retried", ["tenant"])
NOT_SENT = Counter(f"{NS}_messages_not_sent_total", "Messages recorded not_sent (opted_out, no_template)",
                   ["tenant", "reason"])
INFOBIP_ERRORS = Counter(f"{NS}_infobip_errors_total", "Errors of Infobip posts, by HTTP status and Infobip code",
                         ["tenant", "http_status", "code"])
REPORTS = Counter(f"{NS}_delivery_reports_total", "Delivery and seen reports applied, by kind and status",
                  ["tenant", "kind", "status"])
REPORT_LAG = Histogram(f"{NS}_delivery_report_lag_seconds",
                       "From Infobip's doneAt/seenAt of a report to our worker applying it", ["tenant", "kind"],
                       buckets=(.25, .5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600))

# ---------------------------------------------------------------- reminders, handoffs, opt-outs
REMINDERS = Counter(f"{NS}_reminders_dispatched_total", "Reminders dispatched, by whether they were late",
                    ["tenant", "late"])
REMINDERS_DUE = Gauge(f"{NS}_reminders_due", "Reminders found due by the last dispatch run", ["tenant"])
CONVERSATION_EVENTS = Counter(f"{NS}_conversation_events_total",
                              "Conversation switches: handoff, handback, opt_out, opt_in", ["tenant", "kind"])

# ---------------------------------------------------------------- Celery tasks (every worker)
TASKS = Counter(f"{NS}_tasks_total", "Celery tasks run, by task and outcome (ok, retry, error)", ["task", "outcome"])
TASK_DURATION = Histogram(f"{NS}_task_duration_seconds", "Duration of Celery task bodies", ["task"],
                          buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300))

# Collected at scrape time from Redis by the web app (ingress/metrics.py, workers/metrics.py queue_snapshot).
QUEUE_DEPTH = f"{NS}_queue_depth"
QUEUE_OLDEST_AGE = f"{NS}_queue_oldest_age_seconds"
WORKERS_ALIVE = f"{NS}_workers_alive"

_COLLECTED = (QUEUE_DEPTH, QUEUE_OLDEST_AGE, WORKERS_ALIVE)


_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "gauge": ("",)}


def _exported_names() -> frozenset[str]:
    names = set(_COLLECTED)
    for metric in (HTTP_REQUESTS, HTTP_LATENCY, WEBHOOK_RESULTS, ENQUEUE_FAILURES, TURN_LATENCY, TURNS, TOOL_CALLS,
                   LLM_CALLS, LLM_LATENCY, LLM_TOKENS, BUDGET_USED, TOKENS_TODAY, SENDS, SEND_RETRIES, NOT_SENT,
                   INFOBIP_ERRORS, REPORTS, REPORT_LAG, REMINDERS, REMINDERS_DUE, CONVERSATION_EVENTS, TASKS,
                   TASK_DURATION):
        family = metric.describe()[0]
        names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return frozenset(names)


EXPORTED = _exported_names()  # every sample name a scrape may show (the alert rules' test checks against it)

_SAFE = re.compile(r"[^A-Za-z0-9_.:/-]")


def bounded(value: Any, limit: int = 64) -> str:
    """A label value: printable, short; never used for ids or numbers of people."""
    return _SAFE.sub("_", str(value if value not in (None, "") else "none"))[:limit]


def _tenant(tenant: str | None) -> str:
    return bounded(tenant or logctx.current().get("tenant_id") or "none")


# ---------------------------------------------------------------- recording functions

def webhook_results(kind: str, accepted: int = 0, duplicates: int = 0, ignored: int = 0) -> None:
    for outcome, n in (("accepted", accepted), ("duplicate", duplicates), ("ignored", ignored)):
        if n:
            WEBHOOK_RESULTS.labels(bounded(kind), outcome).inc(n)


def enqueue_failed(source: str, n: int = 1) -> None:
    ENQUEUE_FAILURES.labels(bounded(source)).inc(n)


def turn(outcome: str, tenant: str | None = None) -> None:
    """One turn ended: answered, no_reply (nothing for the model: reactions, a person handles it...), retried,
    failed (the apology went out)."""
    TURNS.labels(_tenant(tenant), bounded(outcome)).inc()


def tool_call(tool: str, ok: bool, tenant: str | None = None) -> None:
    TOOL_CALLS.labels(_tenant(tenant), bounded(tool), "ok" if ok else "error").inc()


def llm_call(provider: str, model: str, seconds: float, ok: bool, prompt_tokens: int = 0,
             completion_tokens: int = 0, tenant: str | None = None) -> None:
    t, p, m = _tenant(tenant), bounded(provider), bounded(model)
    LLM_CALLS.labels(t, p, m, "ok" if ok else "error").inc()
    LLM_LATENCY.labels(t, p, m).observe(max(0.0, seconds))
    if prompt_tokens:
        LLM_TOKENS.labels(t, p, m, "prompt").inc(prompt_tokens)
    if completion_tokens:
        LLM_TOKENS.labels(t, p, m, "completion").inc(completion_tokens)


def metered_chat(chat: Callable) -> Callable:
    """Decorate a provider's `chat` method: each call counted with its latency and tokens (a FailoverProvider is
    not decorated: its primary and fallback are)."""
    def wrapper(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            result = chat(self, *args, **kwargs)
        except Exception:
            llm_call(getattr(self, "name", "?"), getattr(self, "model", "?"), time.perf_counter() - started, False)
            raise
        llm_call(getattr(result, "provider", "") or self.name, getattr(result, "model", "") or self.model,
                 time.perf_counter() - started, True, result.usage.prompt_tokens, result.usage.completion_tokens)
        return result
    wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = chat.__name__, chat.__doc__, chat  # type: ignore
    return wrapper


def budget(tenant: str, tokens_today: int, daily_budget: int | None) -> None:
    TOKENS_TODAY.labels(bounded(tenant)).set(tokens_today)
    if daily_budget:
        BUDGET_USED.labels(bounded(tenant)).set(tokens_today / daily_budget)


def send(status: str, tenant: str | None = None) -> None:
    SENDS.labels(_tenant(tenant), bounded(status)).inc()


def send_retry(tenant: str | None = None) -> None:
    SEND_RETRIES.labels(_tenant(tenant)).inc()


def not_sent(reason: str, tenant: str | None = None) -> None:
    NOT_SENT.labels(_tenant(tenant), bounded(reason, 24)).inc()


def infobip_error(http_status: int | None, code: str | None, tenant: str | None = None) -> None:
    code_label = code if code and re.fullmatch(r"[A-Za-z0-9_]{1,40}", code) else "other"
    INFOBIP_ERRORS.labels(_tenant(tenant), str(http_status) if http_status else "none", code_label).inc()


def report(kind: str, status: str, lag_seconds: float | None, tenant: str | None = None) -> None:
    t = _tenant(tenant)
    REPORTS.labels(t, bounded(kind), bounded(status)).inc()
    if lag_seconds is not None:
        REPORT_LAG.labels(t, bounded(kind)).observe(max(0.0, lag_seconds))


def reminders(tenant: str, due: int, late: int) -> None:
    REMINDERS_DUE.labels(bounded(tenant)).set(due)
    if due - late:
        REMINDERS.labels(bounded(tenant), "false").inc(due - late)
    if late:
        REMINDERS.labels(bounded(tenant), "true").inc(late)


def conversation_event(kind: str, tenant: str | None = None) -> None:
    CONVERSATION_EVENTS.labels(_tenant(tenant), bounded(kind)).inc()


def task_done(task: str, outcome: str, seconds: float) -> None:
    TASKS.labels(bounded(task), outcome).inc()
    TASK_DURATION.labels(bounded(task)).observe(max(0.0, seconds))


# ---------------------------------------------------------------- turn latency: receipt -> first send

RECEIPT_TTL = 24 * 3600


def receipt_key(tenant_id: str, request_id: str) -> str:
    return f"wabot:metrics:receipt:{tenant_id}:{request_id}"


def remember_receipt(redis, tenant_id: str, request_id: str | None, received_at: float | None) -> None:
    """Keep when the webhook received the message of `request_id` (the first message of the request wins), until
    the first part of its reply is sent (`first_send`). Never raises: metrics never cost a task."""
    if not request_id or not received_at:
        return
    try:
        redis.set(receipt_key(tenant_id, request_id), repr(float(received_at)), nx=True, ex=RECEIPT_TTL)
    except Exception:
        pass


def first_send(redis, tenant_id: str, request_id: str | None, now: float | None = None) -> float | None:
    """Infobip accepted part 1 of a reply of `request_id`: observe the turn latency once (the receipt is taken
    with GETDEL, so later replies of the same request are not counted again); returns it."""
    if not request_id:
        return None
    try:
        raw = redis.getdel(receipt_key(tenant_id, request_id))
    except Exception:
        return None
    if raw is None:
        return None
    latency = max(0.0, (now if now is not None else time.time()) - float(raw))
    TURN_LATENCY.labels(bounded(tenant_id)).observe(latency)
    return latency
