"""When to try an Infobip send again: exponential backoff with jitter, never sooner than Infobip's `Retry-After`.

Guarantee (bounded, yet outlasting an outage): a send is posted at most MAX_ATTEMPTS times, and with the default
base of 2 s its retries spread over at least ~17 minutes (at most ~34): each wait lies between half and all of
min(300 s, base * 2^(attempt-1)), and a short `Retry-After` does not shorten it. So an Infobip outage of a few
minutes delays replies; it does not fail them for good.

The schedule is computed here and carried out by Celery (`self.retry(countdown=...)`): the waiting task sits in the
broker, not in a sleeping worker thread, which is why no blocking retry library (tenacity) is used for sends.
"""
from __future__ import annotations

import random
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Mapping

from shared.config.settings import DEFAULT_INFOBIP_RETRY_BASE, environment, infobip_retry_base

MAX_ATTEMPTS = 14                # posts of one outbox row, the first included (13 waits of at least half their ceiling: 1005 s for base 2 s)
DEFAULT_BASE_SECONDS = DEFAULT_INFOBIP_RETRY_BASE
MAX_DELAY_SECONDS = 300.0        # cap of one wait of the exponential backoff
MAX_RETRY_AFTER_SECONDS = 3600.0  # a Retry-After beyond this is treated as this (the task must not vanish for days)


def retry_base_seconds(env: Mapping[str, str] | None = None) -> float:
    """INFOBIP_RETRY_BASE_SECONDS: the first backoff step (default 2 s; the tests make it short), parsed as in the
    process settings (`Settings.infobip_retry_base_seconds`), from the process environment unless `env` is given."""
    return infobip_retry_base(environment() if env is None else env)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds to wait: either delta-seconds (`"120"`) or an HTTP date. None when absent or
    unreadable (the backoff applies then); never negative."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def backoff_ceiling(attempt: int, base: float, cap: float = MAX_DELAY_SECONDS) -> float:
    """The longest wait after `attempt` failed tries: base * 2^(attempt-1), capped."""
    return min(cap, base * (2 ** min(max(attempt - 1, 0), 60)))


def retry_delay(attempt: int, retry_after: float | None, base: float, cap: float = MAX_DELAY_SECONDS) -> float:
    """Seconds before the next try after `attempt` failed tries (1 = the first post failed).

    A random wait between half and all of the backoff ceiling, so many throttled sends do not come back at the same
    instant and the whole schedule still has a known minimum length. Infobip's `Retry-After` is honoured as the
    least we wait: a longer one wins, a shorter one does not make the retries run out faster."""
    ceiling = backoff_ceiling(attempt, base, cap)
    if retry_after is not None:
        return max(retry_after, ceiling / 2)
    return random.uniform(ceiling / 2, ceiling)
