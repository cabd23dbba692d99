"""What every console response and request goes through: a strict Content-Security-Policy (no inline script or
style, nothing from another origin), no framing, no caching of pages; state-changing requests must come from our
own origin and carry the session's CSRF token (form field `csrf_token` or header `X-CSRF-Token`)."""
from __future__ import annotations

import hmac

from flask import Response, abort, g, request

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def add_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if not request.path.startswith("/console/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


def same_origin() -> bool:
    """A state-changing request must name our origin: browsers send `Origin` (scheme://host[:port]) on every
    POST; an old one sending only `Referer` must send a URL of ours. Compared as text, nothing parsed: a URL
    another parser reads differently cannot pass."""
    ours = request.host_url.rstrip("/")
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin == ours
    return (request.headers.get("Referer") or "").startswith(ours + "/")


def check_csrf(expected: str | None) -> None:
    """Abort 403 unless an unsafe request comes from our origin with the session's CSRF token."""
    if request.method in SAFE_METHODS:
        return
    given = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    if not same_origin() or not expected or not hmac.compare_digest(given, expected):
        g.csrf_refused = True
        abort(403, description="the form is stale or came from another site (CSRF check failed); reload the "
                               "page and try again")
