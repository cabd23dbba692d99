"""JSON error bodies for every HTTP error, so Infobip's logs and ours show why a webhook was refused."""
from __future__ import annotations

from flask import Flask, g, jsonify
from werkzeug.exceptions import HTTPException


def error_response(status: int, error: str, message: str, details=None):
    body = {"error": error, "message": message, "request_id": g.get("request_id")}
    if details is not None:
        body["details"] = details
    return jsonify(body), status


def http_error(exc: HTTPException):
    """The JSON body of an HTTP error (the console renders HTML for its own pages: ingress/console/auth.py)."""
    name = (exc.name or "error").lower().replace(" ", "_")
    messages = {413: "request body is larger than the webhook limit"}
    return error_response(exc.code or 500, name, messages.get(exc.code, exc.description or name))


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, http_error)
