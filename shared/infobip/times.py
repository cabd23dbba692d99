"""Infobip's timestamps: `2025-01-01T10:10:00.000+0000` (an offset without a colon, not always +0000)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def parse_infobip_time(value: Any) -> datetime | None:
    """An aware datetime, or None when the value is missing or unreadable (the caller picks the fallback)."""
    if not value:
        return None
    text = str(value)
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
