"""The one clock: aware UTC now. Passed into domain code (`clock=`) so tests can fix time."""
from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
