"""Webhook credentials: Infobip sends our token as the `X-Webhook-Token` header or as HTTP Basic password."""
from __future__ import annotations

import hmac

from flask import Request

TOKEN_HEADER = "X-Webhook-Token"


def presented_token(request: Request) -> str | None:
    token = request.headers.get(TOKEN_HEADER)
    if token:
        return token
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.password:
        return auth.password
    return None


def token_matches(presented: str | None, expected: str | None) -> bool:
    """Constant-time comparison, so response timing does not reveal how much of a guess was right."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())
