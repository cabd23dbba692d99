"""WhatsApp number normalisation: one canonical form so lookups tolerate `+`, spaces, dashes and brackets."""
from __future__ import annotations

import re

_NOISE = re.compile(r"[\s\-().]")


def normalize_number(raw: object) -> str:
    """Return the digits of a phone number (`+1 (234) 567-890` -> `1234567890`, `0044 20...` -> `4420...`).

    Raises ValueError when anything but digits remains, so a typo in tenants.yaml is caught at start-up.
    """
    text = _NOISE.sub("", str(raw or ""))
    if text.startswith("+"):
        text = text[1:]
    elif text.startswith("00"):
        text = text[2:]
    if not text.isdigit() or not 5 <= len(text) <= 20:
        raise ValueError(f"not a phone number: {raw!r}")
    return text
