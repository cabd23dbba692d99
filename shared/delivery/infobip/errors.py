"""Infobip error bodies, both formats, parsed without trusting their shape."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class InfobipError:
    http_status: int | None
    code: str            # e.g. BAD_REQUEST, UNAUTHORIZED, TOO_MANY_REQUESTS, E400, CONNECTION_ERROR
    text: str
    details: Any = None  # validationErrors / violations as sent

    @property
    def retryable(self) -> bool:
        """Connection problems, 429 and 5xx may pass on a later try; other 4xx will not."""
        return self.http_status is None or self.http_status == 429 or self.http_status >= 500

    def as_dict(self) -> dict:
        return {"http_status": self.http_status, "code": self.code, "text": self.text, "details": self.details}


def parse_error(http_status: int | None, body: Any) -> InfobipError:
    """Read `{"requestError":{"serviceException":{...}}}` or `{"errorCode","description","violations"}`."""
    if isinstance(body, dict):
        exc = body.get("requestError", {})
        exc = exc.get("serviceException") or exc.get("policyException") if isinstance(exc, dict) else None
        if isinstance(exc, dict):
            return InfobipError(http_status, str(exc.get("messageId") or f"HTTP_{http_status}"),
                                str(exc.get("text") or ""), exc.get("validationErrors"))
        if "errorCode" in body:
            return InfobipError(http_status, str(body.get("errorCode")), str(body.get("description") or ""),
                                body.get("violations"))
    text = body if isinstance(body, str) else ""
    return InfobipError(http_status, f"HTTP_{http_status}" if http_status else "NO_RESPONSE", text[:500])


# Infobip's code for "no open customer-care session" (the 24-hour window is closed). Other providers' codes for the
# same case differ (WhatsApp's 131047 "Re-engagement message"), so the name/description is read too.
NO_SESSION_IDS = {7010}
_SESSION_WORDS = re.compile(r"no[ _-]?session|session|window|24[ -]?h|re-?engagement", re.IGNORECASE)


def is_session_error(error: Any) -> bool:
    """Whether a delivery report's `error` says the chat window is closed (so only a template can go through)."""
    if not isinstance(error, dict):
        return False
    try:
        if int(error.get("id")) in NO_SESSION_IDS:
            return True
    except (TypeError, ValueError):
        pass
    words = f"{error.get('name') or ''} {error.get('description') or ''}"
    if "NO_SESSION" in words.upper():
        return True
    permanent = error.get("permanent")
    return (permanent is True or str(permanent).lower() == "true") and bool(_SESSION_WORDS.search(words))
