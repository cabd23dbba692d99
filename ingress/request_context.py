"""Per-request logging context: a request id (ours, or the caller's X-Request-Id) bound for every log line."""
from __future__ import annotations

import re

from flask import Flask, g, request

from shared import log as logctx

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def init_app(app: Flask) -> None:
    @app.before_request
    def _bind() -> None:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if _SAFE_ID.match(incoming) else logctx.new_request_id()
        logctx.clear()
        logctx.bind(request_id=g.request_id)

    @app.after_request
    def _header(response):
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response

    @app.teardown_request
    def _clear(_exc) -> None:
        logctx.clear()
