"""The Infobip WhatsApp client: one call per send, our own messageId on every request.

The client makes exactly one HTTP attempt per call and reports whether a retry may help; the outbound task owns
the retry schedule, so a retried send keeps the same messageId and never blocks a worker thread in a sleep.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from shared.infobip.errors import InfobipError, parse_error

TEXT_LIMIT = 4096


@dataclass(frozen=True)
class SendResult:
    ok: bool
    http_status: int | None
    body: Any
    error: InfobipError | None = None
    retry_after: float | None = None


class InfobipClient:
    def __init__(self, base_url: str, api_key: str, *, session: requests.Session | None = None,
                 timeout: tuple[float, float] = (5.0, 30.0)):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._session = session or requests.Session()
        self._timeout = timeout

    def _post(self, path: str, body: dict | None) -> SendResult:
        headers = {"Authorization": f"App {self._api_key}", "Accept": "application/json"}
        try:
            resp = self._session.post(self.base_url + path, json=body, headers=headers, timeout=self._timeout)
        except requests.RequestException as exc:
            return SendResult(False, None, None, InfobipError(None, "CONNECTION_ERROR", exc.__class__.__name__))
        try:
            data = resp.json() if resp.content else None
        except ValueError:
            data = resp.text[:2000]
        if 200 <= resp.status_code < 300:
            return SendResult(True, resp.status_code, data)
        retry_after = None
        if resp.headers.get("Retry-After", "").strip().isdigit():
            retry_after = float(resp.headers["Retry-After"])
        return SendResult(False, resp.status_code, data, parse_error(resp.status_code, data), retry_after)

    def send_text(self, *, sender: str, to: str, text: str, message_id: str,
                  reply_to: str | None = None) -> SendResult:
        return self._post("/whatsapp/1/message/text", text_body(sender=sender, to=to, text=text,
                                                                message_id=message_id, reply_to=reply_to))

    def send(self, path: str, body: dict) -> SendResult:
        """Send a prepared request body (stored in the outbox) to one of the /whatsapp/1 endpoints."""
        return self._post(path, body)


def text_body(*, sender: str, to: str, text: str, message_id: str, reply_to: str | None = None) -> dict:
    body: dict[str, Any] = {"from": sender, "to": to, "messageId": message_id, "content": {"text": text}}
    if reply_to:
        body["context"] = {"replyToMessageId": reply_to}
    return body
