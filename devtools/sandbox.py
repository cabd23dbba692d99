"""A local stand-in for Infobip's WhatsApp API: records every request and answers in Infobip's wire format.

`make dev` points INFOBIP_BASE_URL here so the bot runs without an Infobip account (`wabot chat` reads the
bot's replies from it), and the tests use it as the fake Infobip server. Responses can be scripted (status,
body, headers) to play Infobip's failures: 429, 500, 401 ...

Endpoints besides Infobip's own:
- GET  /_sandbox/requests?since=N   recorded requests after sequence number N
- GET  /_sandbox/messages?to=NUMBER&since=N   texts sent to a user (what the user would see on the phone)
- POST /_sandbox/script   {"responses": [{"status": 500, "body": {...}, "headers": {...}, "to": "..."}, ...]} for
  the next sends, in order; a response with `to` answers only a send to that number (tests running side by side
  do not take each other's scripted failures), one without answers any send
- POST /_sandbox/reset

Inbound media (voice notes, images) is served like Infobip does: `add_media()` stores bytes and returns the URL an
inbound message carries as `message.url`; `GET /whatsapp/1/senders/{sender}/media/{media_id}` serves them.
"""
from __future__ import annotations

import json
import re
import threading
import time
import uuid
from typing import Any
from urllib.parse import quote

from werkzeug.wrappers import Request, Response

from devtools.localserver import LocalServer

_ERRORS = {
    400: ("BAD_REQUEST", "Bad request"),
    401: ("UNAUTHORIZED", "Invalid login details"),
    403: ("FORBIDDEN", "Forbidden"),
    404: ("NOT_FOUND", "Not found"),
    429: ("TOO_MANY_REQUESTS", "Too many requests"),
    500: ("GENERAL_ERROR", "Something went wrong"),
}
_SEND_PATHS = ("/whatsapp/1/message/text", "/whatsapp/1/message/template", "/whatsapp/1/message/interactive/buttons")
_READ_PATH = re.compile(r"^/whatsapp/1/senders/[^/]+/message/[^/]+/read$")
_MEDIA_PATH = re.compile(r"^/whatsapp/1/senders/[^/]+/media/([^/]+)$")


def error_body(status: int, validation: dict | None = None) -> dict:
    code, text = _ERRORS.get(status, ("GENERAL_ERROR", "Error"))
    exc: dict[str, Any] = {"messageId": code, "text": text}
    if validation:
        exc["validationErrors"] = validation
    return {"requestError": {"serviceException": exc}}


def _pending(to: str, message_id: str) -> dict:
    return {"to": to, "messageCount": 1, "messageId": message_id,
            "status": {"groupId": 1, "groupName": "PENDING", "id": 7, "name": "PENDING_ENROUTE",
                       "description": "Message sent to next instance"}}


def _recipient(body: Any) -> str | None:
    """The `to` of a send: top-level for text and buttons, in `messages[0]` for templates."""
    if not isinstance(body, dict):
        return None
    if body.get("to"):
        return str(body["to"])
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
        return messages[0].get("to")
    return None


class InfobipSandbox(LocalServer):
    thread_name = "infobip-sandbox"

    def __init__(self, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0):
        self.api_key = api_key
        self._lock = threading.Lock()
        self._requests: list[dict] = []
        self._script: list[dict] = []
        self._media: dict[str, tuple[bytes, str]] = {}
        super().__init__(host, port)
        self.url = self.base_url

    # ---- in-process helpers (tests)
    def requests(self, since: int = 0, path: str | None = None) -> list[dict]:
        with self._lock:
            return [r for r in self._requests if r["seq"] > since and (path is None or r["path"] == path)]

    def script(self, *responses: dict) -> None:
        with self._lock:
            self._script.extend(responses)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._script.clear()
            self._media.clear()

    def add_media(self, media_id: str, content: bytes, content_type: str, *, sender: str = "447000000000") -> str:
        """Store media an inbound message refers to; returns its URL (on this sandbox) for `message.url`."""
        with self._lock:
            self._media[media_id] = (bytes(content), content_type)
        return f"{self.url}/whatsapp/1/senders/{quote(sender, safe='')}/media/{quote(media_id, safe='')}"

    def _take_script(self, to: str | None) -> dict | None:
        """The first scripted response meant for this recipient (or for anyone); caller holds the lock."""
        for i, item in enumerate(self._script):
            if item.get("to") is None or item.get("to") == to:
                return self._script.pop(i)
        return None

    # ---- HTTP
    def _wsgi(self, environ, start_response):
        request = Request(environ)
        return self._handle(request)(environ, start_response)

    def _handle(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/_sandbox/"):
            return self._control(request)
        raw = request.get_data(as_text=True)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        with self._lock:
            seq = len(self._requests) + 1
            self._requests.append({"seq": seq, "method": request.method, "path": path,
                                   "headers": {k: v for k, v in request.headers.items()},
                                   "json": body, "at": time.time()})
            scripted = self._take_script(_recipient(body)) if path in _SEND_PATHS else None
        if self.api_key is not None and request.headers.get("Authorization") != f"App {self.api_key}":
            return self._json(error_body(401), 401)
        if scripted is not None:
            status = int(scripted.get("status", 200))
            if status >= 300 or "body" in scripted:
                payload = scripted.get("body", error_body(status) if status >= 300 else {})
                return self._json(payload, status, scripted.get("headers"))
        media = _MEDIA_PATH.match(path)
        if media and request.method == "GET":
            with self._lock:
                stored = self._media.get(media.group(1))  # request.path is already decoded
            if stored is None:
                return self._json(error_body(404), 404)
            return Response(stored[0], status=200, content_type=stored[1])
        if request.method != "POST":
            return self._json(error_body(404), 404)
        if path == "/whatsapp/1/message/text":
            if not isinstance(body, dict) or not (body.get("content") or {}).get("text"):
                return self._json(error_body(400, {"content.text": ["must not be blank"]}), 400)
            if len(body["content"]["text"]) > 4096:
                return self._json(error_body(400, {"content.text": ["size must be between 1 and 4096"]}), 400)
            return self._json(_pending(body.get("to", ""), body.get("messageId") or str(uuid.uuid4())))
        if path in ("/whatsapp/1/message/interactive/buttons",):
            return self._json(_pending((body or {}).get("to", ""), (body or {}).get("messageId") or str(uuid.uuid4())))
        if path == "/whatsapp/1/message/template":
            msgs = (body or {}).get("messages") or []
            return self._json({"messages": [_pending(m.get("to", ""), m.get("messageId") or str(uuid.uuid4()))
                                             for m in msgs], "bulkId": str(uuid.uuid4())})
        if _READ_PATH.match(path):
            return Response(status=204)
        if path == "/whatsapp/1/events":
            return self._json({})
        return self._json(error_body(404), 404)

    def _control(self, request: Request) -> Response:
        since = int(request.args.get("since", "0") or 0)
        if request.path == "/_sandbox/requests":
            return self._json({"requests": self.requests(since)})
        if request.path == "/_sandbox/messages":
            to = request.args.get("to")
            out = []
            with self._lock:  # the requests and last_seq from one snapshot: nothing recorded between is skipped
                recorded = [r for r in self._requests if r["seq"] > since]
                last = self._requests[-1]["seq"] if self._requests else 0
            for r in recorded:
                body = r["json"] if isinstance(r["json"], dict) else {}
                if r["path"] == "/whatsapp/1/message/text" and (to is None or body.get("to") == to):
                    out.append({"seq": r["seq"], "to": body.get("to"), "text": body["content"]["text"]})
                elif r["path"] == "/whatsapp/1/message/template":
                    for m in body.get("messages", []):
                        if to is None or m.get("to") == to:
                            out.append({"seq": r["seq"], "to": m.get("to"),
                                        "text": f"[template {m['content'].get('templateName')}]"})
            return self._json({"messages": out, "last_seq": last})
        if request.path == "/_sandbox/script" and request.method == "POST":
            self.script(*(request.get_json(force=True).get("responses") or []))
            return self._json({"ok": True})
        if request.path == "/_sandbox/reset" and request.method == "POST":
            self.reset()
            return self._json({"ok": True})
        return self._json(error_body(404), 404)

    @staticmethod
    def _json(payload: Any, status: int = 200, headers: dict | None = None) -> Response:
        return Response(json.dumps(payload), status=status, headers=headers or {}, mimetype="application/json")
