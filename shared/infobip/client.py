"""The Infobip WhatsApp client: one call per send, our own messageId on every request.

The client makes exactly one HTTP attempt per call and reports whether a retry may help; the outbound task owns
the retry schedule (shared.infobip.retry), so a retried send keeps the same messageId and never blocks a worker
thread in a sleep. Mark-as-read and the typing indicator are courtesies: they never raise.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from shared.infobip.errors import InfobipError, parse_error
from shared.infobip.retry import parse_retry_after

log = logging.getLogger(__name__)

TEXT_LIMIT = 4096
TEXT_PATH = "/whatsapp/1/message/text"
TEMPLATE_PATH = "/whatsapp/1/message/template"
EVENTS_PATH = "/whatsapp/1/events"


@dataclass(frozen=True)
class SendResult:
    ok: bool
    http_status: int | None
    body: Any
    error: InfobipError | None = None
    retry_after: float | None = None


class InfobipClient:
    def __init__(self, base_url: str, api_key: str, *, session: requests.Session | None = None,
                 timeout: tuple[float, float] = (5.0, 30.0), courtesy_timeout: tuple[float, float] = (2.0, 5.0)):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._session = session or requests.Session()
        self._timeout = timeout
        self._courtesy_timeout = courtesy_timeout

    def _headers(self) -> dict:
        return {"Authorization": f"App {self._api_key}", "Accept": "application/json"}

    def _post(self, path: str, body: dict | None, timeout: tuple[float, float] | None = None) -> SendResult:
        try:
            resp = self._session.post(self.base_url + path, json=body, headers=self._headers(),
                                      timeout=timeout or self._timeout)
        except requests.RequestException as exc:
            return SendResult(False, None, None, InfobipError(None, "CONNECTION_ERROR", exc.__class__.__name__))
        try:
            data = resp.json() if resp.content else None
        except ValueError:
            data = resp.text[:2000]
        if 200 <= resp.status_code < 300:
            return SendResult(True, resp.status_code, data)
        return SendResult(False, resp.status_code, data, parse_error(resp.status_code, data),
                          parse_retry_after(resp.headers.get("Retry-After")))

    def send_text(self, *, sender: str, to: str, text: str, message_id: str,
                  reply_to: str | None = None) -> SendResult:
        return self._post(TEXT_PATH, text_body(sender=sender, to=to, text=text, message_id=message_id,
                                               reply_to=reply_to))

    def send(self, path: str, body: dict) -> SendResult:
        """Send a prepared request body (stored in the outbox) to one of the /whatsapp/1 endpoints."""
        return self._post(path, body)

    def mark_read(self, sender: str, message_id: str) -> bool:
        """Show the user's message as read (blue ticks). Never raises: a failure is logged and harmless."""
        path = f"/whatsapp/1/senders/{quote(sender, safe='')}/message/{quote(message_id, safe='')}/read"
        return self._courtesy("mark read", path, None)

    def typing(self, sender: str, to: str) -> bool:
        """Show 'typing…' to the user while the reply is being written. Never raises."""
        body = {"events": [{"sender": sender, "destinations": [{"to": to}],
                            "content": {"type": "TYPING_INDICATOR"}}]}
        return self._courtesy("typing indicator", EVENTS_PATH, body)

    def _courtesy(self, what: str, path: str, body: dict | None) -> bool:
        try:
            result = self._post(path, body, self._courtesy_timeout)
        except Exception as exc:  # a courtesy call must never break the turn
            log.warning(f"infobip {what} failed", extra={"error": exc.__class__.__name__})
            return False
        if not result.ok:
            log.warning(f"infobip {what} failed", extra={"infobip_error": result.error.as_dict()
                                                         if result.error else None})
        return result.ok


def text_body(*, sender: str, to: str, text: str, message_id: str, reply_to: str | None = None) -> dict:
    body: dict[str, Any] = {"from": sender, "to": to, "messageId": message_id, "content": {"text": text}}
    if reply_to:
        body["context"] = {"replyToMessageId": reply_to}
    return body


def template_body(*, sender: str, to: str, message_id: str, template_name: str, language: str,
                  placeholders: list[str]) -> dict:
    """Infobip's template request: one message in `messages`, our messageId on it."""
    return {"messages": [{"from": sender, "to": to, "messageId": message_id,
                          "content": {"templateName": template_name,
                                      "templateData": {"body": {"placeholders": list(placeholders)}},
                                      "language": language}}]}


def accepted_status(response: Any) -> dict:
    """The `status` object of a send response: top-level for text, in `messages[0]` for templates."""
    if not isinstance(response, dict):
        return {}
    if isinstance(response.get("status"), dict):
        return response["status"]
    messages = response.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
        status = messages[0].get("status")
        return status if isinstance(status, dict) else {}
    return {}
