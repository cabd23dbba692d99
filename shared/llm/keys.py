"""API key rotation: several keys for one provider; a key the server refuses is set aside, the next one is used.

A key answering 401 is set aside until restart (it will not heal by itself); a key answering 429 is set aside for
a cooldown (the server's Retry-After when it gives a sane one, else `rate_limit_cooldown`). Keys are referred to
by INDEX in logs and errors, never by value. Thread-safe: the inbound worker runs many turns on threads.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Sequence

log = logging.getLogger(__name__)

FOREVER = float("inf")


class KeyRing:
    def __init__(self, keys: Sequence[str], *, label: str = "llm", rate_limit_cooldown: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._keys = tuple(keys) or ("",)  # one empty key: local servers (Ollama) need none
        self._label = label
        self._cooldown = rate_limit_cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._aside_until = [0.0] * len(self._keys)
        self._reason = [""] * len(self._keys)
        self._next = 0  # round-robin start, so load spreads over the healthy keys

    def __len__(self) -> int:
        return len(self._keys)

    def acquire(self) -> tuple[int, str] | None:
        """The next key not set aside, as (index, key); None when every key is set aside."""
        now = self._clock()
        with self._lock:
            for step in range(len(self._keys)):
                i = (self._next + step) % len(self._keys)
                if self._aside_until[i] <= now:
                    self._next = (i + 1) % len(self._keys)
                    return i, self._keys[i]
        return None

    def set_aside(self, index: int, status: int, retry_after: float | None = None) -> None:
        """Take key `index` out of rotation after it answered `status` (401: until restart; 429: a cooldown)."""
        if status == 401:
            until, why = FOREVER, f"rejected ({status})"
        else:
            wait = retry_after if retry_after is not None and 0 < retry_after <= 600 else self._cooldown
            until, why = self._clock() + wait, f"rate-limited ({status}) for {wait:.0f}s"
        with self._lock:
            self._aside_until[index] = max(self._aside_until[index], until)
            self._reason[index] = why
        log.warning("LLM API key set aside", extra={"llm_provider": self._label, "key_index": index,
                                                     "reason": why, "keys_total": len(self._keys)})

    def exhausted_reason(self) -> tuple[str, bool]:
        """Why no key is usable, and whether waiting may help (some key only cools down)."""
        now = self._clock()
        with self._lock:
            reasons = [f"key #{i}: {r}" for i, r in enumerate(self._reason) if self._aside_until[i] > now]
            healing = any(now < u < FOREVER for u in self._aside_until)
        return "; ".join(reasons), healing

    def ready_in(self) -> float:
        """Seconds until the soonest key set aside for a cooldown is usable again (inf when none heals)."""
        now = self._clock()
        with self._lock:
            healing = [u - now for u in self._aside_until if now < u < FOREVER]
        return max(0.0, min(healing)) if healing else FOREVER
