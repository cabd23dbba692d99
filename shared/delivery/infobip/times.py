"""Infobip's timestamps: `2025-01-01T10:10:00.000+0000` (an offset without a colon, not always +0000).

Only instants in [2000-01-01, 2100-01-01) UTC count as readable. A `receivedAt` of year 9999 with a negative
offset is year 10000 in UTC: PostgreSQL stores it, but Python cannot read it back, which blocked that user for
good. Refusing it here means no caller (the ingress check or any worker) can store such a time.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)  # exclusive
_FORMATS = ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z")


def read_infobip_time(value: Any) -> datetime:
    """An aware datetime within the sane bounds; ValueError saying why otherwise (the ingress shows it)."""
    if not isinstance(value, str) or not value:
        raise ValueError("Not a timestamp: expected a string like 2025-01-01T10:10:00.000+0000.")
    parsed = _parse(value)
    if parsed is None:
        raise ValueError("Not a timestamp: expected a string like 2025-01-01T10:10:00.000+0000.")
    try:
        instant = parsed.astimezone(timezone.utc)
    except OverflowError:  # 9999-12-31T23:59-2359 is past datetime.max in UTC
        instant = None
    if instant is None or not EARLIEST <= instant < LATEST:
        raise ValueError(f"Timestamp out of range: must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} UTC.")
    return instant


def parse_infobip_time(value: Any) -> datetime | None:
    """An aware datetime, or None when the value is missing, unreadable or out of range (the caller picks the
    fallback, e.g. the time the worker stores the message)."""
    try:
        return read_infobip_time(value)
    except ValueError:
        return None


def _parse(text: str) -> datetime | None:
    for fmt in _FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
