"""English relative-time phrases ("tomorrow at 2 PM", "Friday at 10 AM", "in 20 minutes") to local datetimes.

Used by the offline mock model, which must produce the same tool arguments a real model would: ISO 8601 local
times in the tenant's timezone.
"""
from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_TIME = re.compile(r"\b(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*(a\.?m\.?|p\.?m\.?)(?![a-z])|\bat\s+(\d{1,2}):(\d{2})\b|\b(noon|midnight)\b",
                   re.I)
_IN = re.compile(r"\bin\s+(\d+|an?|one|two|three|five|ten|fifteen|twenty|thirty)\s+(minute|min|hour|day|week)s?\b",
                 re.I)
_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "five": 5, "ten": 10, "fifteen": 15, "twenty": 20,
          "thirty": 30}


def parse_time_of_day(text: str) -> time | None:
    m = _TIME.search(text)
    if not m:
        return None
    if m.group(6):
        return time(12, 0) if m.group(6).lower() == "noon" else time(0, 0)
    if m.group(4):
        hour, minute = int(m.group(4)), int(m.group(5))
    else:
        hour, minute = int(m.group(1)), int(m.group(2) or 0)
        pm = m.group(3).lower().startswith("p")
        if hour == 12:
            hour = 0
        if pm:
            hour += 12
    if not (0 <= hour < 24 and 0 <= minute < 60):
        return None
    return time(hour, minute)


def parse_day(text: str, today: date) -> date | None:
    low = text.lower()
    if "day after tomorrow" in low:
        return today + timedelta(days=2)
    if "tomorrow" in low:
        return today + timedelta(days=1)
    if re.search(r"\b(today|tonight|this (morning|afternoon|evening))\b", low):
        return today
    for i, name in enumerate(WEEKDAYS):
        if re.search(rf"\b{name}\b", low):
            ahead = (i - today.weekday()) % 7
            if ahead == 0 or re.search(rf"\bnext {name}\b", low):
                ahead = ahead or 7
            return today + timedelta(days=ahead)
    m = re.search(r"\b(\d{4})-(\d{2})-(\d{2})\b", low)
    if m:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    return None


def parse_when(text: str, now: datetime, tz: tzinfo | None = None) -> datetime | None:
    """A local datetime for the phrase, relative to `now` (local, naive), or None when it names no time.

    Days are wall-clock days ("tomorrow at 2 PM", "in 2 days": the same local time), so the result is naive.
    Minutes and hours are elapsed time: with the zone `tz` the result is aware, so "in 4 hours" across a
    daylight-saving change is 4 real hours, not 3 or 5."""
    m = _IN.search(text)
    if m:
        n = int(m.group(1)) if m.group(1).isdigit() else _WORDS[m.group(1).lower()]
        unit = m.group(2).lower()
        delta = {"minute": timedelta(minutes=n), "min": timedelta(minutes=n), "hour": timedelta(hours=n),
                 "day": timedelta(days=n), "week": timedelta(weeks=n)}[unit]
        if tz is not None and unit in ("minute", "min", "hour"):
            elapsed = now.replace(tzinfo=tz).astimezone(timezone.utc) + delta
            return elapsed.astimezone(tz).replace(second=0, microsecond=0)
        return (now + delta).replace(second=0, microsecond=0)
    day = parse_day(text, now.date())
    tod = parse_time_of_day(text)
    if day is None and tod is None:
        return None
    if day is None:
        day = now.date() if datetime.combine(now.date(), tod) > now else now.date() + timedelta(days=1)
    return datetime.combine(day, tod or time(9, 0))


def strip_when(text: str) -> str:
    """The text without its time phrase ("dentist appointment tomorrow at 2 PM" -> "dentist appointment")."""
    out = _IN.sub("", text)
    out = _TIME.sub("", out)
    out = re.sub(r"\b(the day after tomorrow|tomorrow|today|tonight|this (morning|afternoon|evening)|"
                 r"(next |on |this )?(monday|tuesday|wednesday|thursday|friday|saturday|sunday))\b", "", out,
                 flags=re.I)
    out = re.sub(r"\s+(on|at|for)\s*$", "", out.strip(), flags=re.I)
    return re.sub(r"\s{2,}", " ", out).strip(" ,.;:!")


def human_when(when: datetime, now: datetime) -> str:
    """`tomorrow at 2 PM`, `Friday at 10 AM`, `Mon 7 Dec at 9:30 AM` (both local)."""
    hour = when.strftime("%I").lstrip("0") or "12"
    clock = f"{hour}{when.strftime(':%M') if when.minute else ''} {when.strftime('%p')}"
    days = (when.date() - now.date()).days
    if days == 0:
        day = "today"
    elif days == 1:
        day = "tomorrow"
    elif 1 < days < 7:
        day = when.strftime("%A")
    else:
        day = when.strftime("%a %-d %b")
    return f"{day} at {clock}"
