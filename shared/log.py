"""JSON-lines logging with a per-request/per-task context (request_id, tenant_id, user_id, message_id).

The ingress binds the context per HTTP request, the workers per task; the request id made at the ingress
travels inside every task payload so one grep follows a message from webhook to Infobip send.
"""
from __future__ import annotations

import contextvars
import logging
import sys
import uuid

from pythonjsonlogger.json import JsonFormatter

CONTEXT_FIELDS = ("request_id", "tenant_id", "user_id", "message_id")
_context: contextvars.ContextVar[dict] = contextvars.ContextVar("wabot_log_context", default={})


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex[:16]


def bind(**fields: object) -> None:
    """Add fields to the logging context of the current request or task."""
    current = dict(_context.get())
    current.update({k: str(v) for k, v in fields.items() if v is not None})
    _context.set(current)


def current() -> dict:
    """The fields bound to the running request or task (read-only: metrics take the tenant from it)."""
    return _context.get()


def clear() -> None:
    _context.set({})


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def configure_logging(level: str = "INFO", stream=None) -> None:
    """Send every log record to `stream` (stderr) as one JSON object per line."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "asctime": "time"},
    ))
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "urllib3", "openai"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
