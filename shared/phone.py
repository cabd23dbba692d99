"""WhatsApp number normalisation: one canonical form so lookups tolerate `+`, spaces, dashes and brackets.

The ingress schema validates `from`/`to` with this very function, so a number the webhook accepts is one the
worker can store (the two can never disagree).
"""
from __future__ import annotations

import re

# ASCII separators only: `str.isdigit` and `\s` would also take "²", Arabic-Indic digits or U+2028, which no
# phone network knows and Infobip would refuse when we answer.
_NOISE = re.compile(r"[ \t\-().]")
_DIGITS = re.compile(r"[0-9]{5,20}")


def normalize_number(raw: object) -> str:
    """Return the digits of a phone number (`+1 (234) 567-890` -> `1234567890`, `0044 20...` -> `4420...`).

    Takes a string or an int (YAML reads an unquoted number as an int). Raises ValueError when anything but 5 to
    20 ASCII digits remains, so a typo in tenants.yaml is caught at start-up and a bad webhook `from` at the door.
    """
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise ValueError(f"not a phone number: {raw!r}")
    text = _NOISE.sub("", str(raw))
    if text.startswith("+"):
        text = text[1:]
    elif text.startswith("00"):
        text = text[2:]
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"not a phone number: {raw!r}")
    return text


def phone_fragment(text: str | None) -> str | None:
    """The digits of a search text that is a (part of a) phone number: digits and + - ( ) . spaces only, at least
    3 digits; None for anything else, so a name or word with a digit in it ("room 4") is not a phone search."""
    if not text:
        return None
    digits = "".join(c for c in text if c.isdigit())
    if len(digits) < 3 or any(not (c.isdigit() or c in " +-().") for c in text):
        return None
    return digits
