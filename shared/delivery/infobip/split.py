"""Split a long reply into WhatsApp texts of at most 4096 characters, at the most natural boundary available.

Each part is cut at the last paragraph break that fits, else at the last sentence end, else at the last space;
only a single "word" longer than the limit (a long URL, say) is cut inside. Joining the parts gives the text back
up to the whitespace at the cuts.
"""
from __future__ import annotations

import re

from shared.delivery.infobip.client import TEXT_LIMIT

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE = re.compile(r"[.!?…。！？][\"'”’»)\]]*\s+")
_SPACE = re.compile(r"\s+")


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Parts of `text` in order, each 1..limit characters. A blank text is an error (WhatsApp refuses it)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    rest = (text or "").strip()
    if not rest:
        raise ValueError("cannot send an empty text")
    parts: list[str] = []
    while len(rest) > limit:
        cut, resume = _cut_point(rest, limit)
        parts.append(rest[:cut].rstrip())
        rest = rest[resume:].lstrip()
    parts.append(rest)
    return parts


def _cut_point(text: str, limit: int) -> tuple[int, int]:
    """(end of this part, start of the next) for a text longer than `limit`."""
    window = text[: limit + 1]  # a boundary whose whitespace starts right at the limit still fits
    for pattern in (_PARAGRAPH, _SENTENCE, _SPACE):
        best = None
        for m in pattern.finditer(window):
            # the part ends where the whitespace of the boundary begins (a sentence keeps its full stop)
            end = m.start() if pattern is not _SENTENCE else m.start() + len(m.group(0).rstrip())
            if 0 < end <= limit:
                best = (end, m.end())
        if best is not None:
            return best
    return limit, limit
