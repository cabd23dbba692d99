"""Helpers for the tests: payload factories and polling."""
from __future__ import annotations

import itertools
import random
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Callable

INFOBIP_KEY = "test-infobip-key"
WEBHOOK_TOKEN = "test-webhook-token"
BETA_TOKEN = "beta-own-token"
GAMMA_LLM_KEY = "sk-test-gamma-0001"
WEATHER_KEY = "weather-secret-key"
HANDOFF_SECRET = "handoff-hook-secret"
NUMBERS = {"alpha": "447000000001", "beta": "447000000002", "gamma": "447000000003", "delta": "447000000004"}


def wait_for(check: Callable[[], object], timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    """Poll until `check()` returns something truthy; fail the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


_USERS = itertools.count(random.randrange(10**8) * 10)


def new_user() -> str:
    """A phone number no other test of this session uses, so tests can share the databases and the sandbox."""
    return "1555" + str(next(_USERS)).zfill(10)


def infobip_time(when: datetime | None = None) -> str:
    """`when` (default: now) in Infobip's timestamp format, e.g. 2026-11-25T10:10:00.000+0000."""
    when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


def inbound(to: str, sender: str, message: dict, message_id: str | None = None, name: str = "Test User",
            received_at: datetime | None = None) -> dict:
    """One inbound WhatsApp message as Infobip posts it, stamped with the time it is sent unless told otherwise."""
    return {
        "results": [{
            "from": sender, "to": to, "integrationType": "WHATSAPP",
            "receivedAt": infobip_time(received_at),
            "messageId": message_id or f"ib-{uuid.uuid4()}",
            "message": message,
            "contact": {"name": name},
            "price": {"pricePerMessage": 0, "currency": "EUR"},
        }],
        "messageCount": 1, "pendingMessageCount": 0,
    }


def delivery_report(message_id: str, phone: str, group: str, name: str, error: dict | None = None) -> dict:
    """One delivery report as Infobip posts it to the status webhook, sent and done a moment ago."""
    return {"results": [{
        "bulkId": None, "messageId": message_id, "to": phone, "sentAt": infobip_time(), "doneAt": infobip_time(),
        "messageCount": 1, "price": {"pricePerMessage": 0, "currency": "EUR"},
        "status": {"groupId": 3, "groupName": group, "id": 5, "name": name, "description": "x"},
        "error": error or {"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR", "description": "No Error",
                           "permanent": False}}]}


AUTH = {"X-Webhook-Token": WEBHOOK_TOKEN}
# Settings that load without any server (for `wabot check` and config parsing tests): nothing is reached.
OFFLINE_ENV = {"REDIS_URL": "redis://127.0.0.1/0", "WEBHOOK_VERIFY_TOKEN": "t", "LLM_PROVIDER": "mock",
               "INFOBIP_BASE_URL": "https://x.api.infobip.com", "INFOBIP_API_KEY": "k",
               "DATABASE_URL_DEFAULT": "postgresql://u@db.example/postgres", "INFOBIP_WABA_NUMBERS": ""}


def texts_to(sandbox, user: str) -> list[str]:
    out = []
    for r in sandbox.requests(path="/whatsapp/1/message/text"):
        if (r["json"] or {}).get("to") == user:
            out.append(r["json"]["content"]["text"])
    return out


def wait_texts(sandbox, user: str, n: int, what: str) -> list[str]:
    return wait_for(lambda: (lambda t: t if len(t) >= n else None)(texts_to(sandbox, user)), 30, what=what)


def free_port() -> int:
    """A loopback TCP port nobody listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
