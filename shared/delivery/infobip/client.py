"""The Infobip WhatsApp client: one call per send, our own messageId on every request.

The client makes exactly one HTTP attempt per call and reports whether a retry may help; the outbound task owns
the retry schedule (shared.delivery.infobip.retry), so a retried send keeps the same messageId and never blocks a worker
thread in a sleep. Mark-as-read and the typing indicator are courtesies: they never raise.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from shared.delivery.infobip.errors import InfobipError, parse_error
from shared.delivery.infobip.retry import parse_retry_after
from shared.safeurl import Origin, UnsafeURL, check_url

log = logging.getLogger(__name__)

TEXT_LIMIT = 4096
TEXT_PATH = "/whatsapp/1/message/text"
TEMPLATE_PATH = "/whatsapp/1/message/template"
EVENTS_PATH = "/whatsapp/1/events"
MEDIA_MAX_BYTES = 16 * 1024 * 1024  # WhatsApp's own cap on audio is 16 MB
# Connections kept open to Infobip per client (one client per tenant and process). More than the outbound worker's
# threads (OUTBOUND_CONCURRENCY, 20 by default), so every thread reuses a kept connection: requests' default of 10
# made urllib3 open and throw away extra ones ("connection pool is full" warnings, a new TLS handshake each time).
DEFAULT_POOL_MAXSIZE = 32


class MediaDownloadError(Exception):
    """Inbound media could not be fetched. Messages name the host and path, never the query string or the key."""


class MediaRefused(MediaDownloadError):
    """The media URL is not on this tenant's Infobip base URL: our key is never sent anywhere else."""


class MediaTooLarge(MediaDownloadError):
    """The media is larger than the cap; the download was stopped."""


@dataclass(frozen=True)
class SendResult:
    ok: bool
    http_status: int | None
    body: Any
    error: InfobipError | None = None
    retry_after: float | None = None


class InfobipClient:
    def __init__(self, base_url: str, api_key: str, *, session: requests.Session | None = None,
                 timeout: tuple[float, float] = (5.0, 30.0), courtesy_timeout: tuple[float, float] = (2.0, 5.0),
                 pool_maxsize: int = DEFAULT_POOL_MAXSIZE):
        """`pool_maxsize`: connections kept for reuse; make it at least the number of threads sharing this client
        (a session passed in keeps its own adapters)."""
        if pool_maxsize < 1:
            raise ValueError("pool_maxsize must be at least 1")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_maxsize=pool_maxsize)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self._session = session
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

    def download_media(self, url: str, max_bytes: int = MEDIA_MAX_BYTES, *, deadline: float = 60.0) -> bytes:
        """The bytes of an inbound message's `message.url`, fetched with our key only from our own Infobip origin.

        The URL is checked by the parser that sends it (shared.safeurl): a backslash, `user:pass@`, control
        characters or any host confusion are refused before a byte is sent, and the request goes to the
        normalised URL that was checked, so the key reaches only the tenant's Infobip scheme, host and port.
        Redirects are not followed (a redirect could lead elsewhere); the body is streamed and dropped once it
        exceeds `max_bytes` or takes longer than `deadline` seconds in total (the read timeout is per chunk).
        """
        try:
            checked = check_url(url, "media URL")
        except UnsafeURL as exc:  # names the rule, never the URL: it may carry a token
            raise MediaRefused(f"{exc}; not sending the key") from None
        if checked.origin != self._origin():
            raise MediaRefused(f"media URL {checked.for_logs} is not on the tenant's Infobip base URL; "
                               "not sending the key")
        where = checked.for_logs
        started = time.monotonic()
        try:
            with self._session.get(checked.url, headers={**self._headers(), "Accept": "*/*"},
                                   timeout=self._timeout, stream=True, allow_redirects=False) as resp:
                if not 200 <= resp.status_code < 300:
                    raise MediaDownloadError(f"media download {where} answered HTTP {resp.status_code}")
                declared = resp.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise MediaTooLarge(f"media {where} is {declared} bytes; the cap is {max_bytes}")
                body = bytearray()
                for chunk in resp.iter_content(64 * 1024):
                    body.extend(chunk)
                    if len(body) > max_bytes:
                        raise MediaTooLarge(f"media {where} is over the cap of {max_bytes} bytes")
                    if time.monotonic() - started > deadline:
                        raise MediaDownloadError(f"media download {where} took over {deadline:.0f}s")
                return bytes(body)
        except requests.RequestException as exc:  # its text may quote the full URL: keep only the class
            raise MediaDownloadError(f"media download {where} failed: {exc.__class__.__name__}") from None

    def _origin(self) -> Origin | None:
        """The Infobip origin our key belongs to, parsed like the media URL (None: no key goes anywhere)."""
        try:
            return check_url(self.base_url, "Infobip base URL").origin
        except UnsafeURL:
            return None

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
