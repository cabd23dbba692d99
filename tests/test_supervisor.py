"""`make dev`'s supervisor: a crashed child comes back with backoff; only a child that keeps crashing stops the stack.
Real child processes (`python -c ...`), small backoffs so the tests take a few seconds."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from devtools.devstack import Supervisor


def child(starts: Path, then: str) -> list[str]:
    """A child that records when it started, then runs `then` (exits, or sleeps)."""
    return [sys.executable, "-c", f"import sys, time; open({str(starts)!r}, 'a').write(f'{{time.time()}}\\n'); {then}"]


def run(sup: Supervisor, seconds: float) -> str | None:
    """Drive the supervisor as `make dev` does, for `seconds` or until it gives up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        failure = sup.poll()
        if failure:
            return failure
        time.sleep(0.02)
    return None


def start_times(path: Path) -> list[float]:
    return [float(line) for line in path.read_text().split()] if path.exists() else []


def test_a_crashed_child_is_restarted_with_growing_capped_backoff(tmp_path):
    starts = tmp_path / "starts"
    sup = Supervisor({}, backoff_first=0.1, backoff_max=0.4, stable_after=10, max_quick_crashes=20)
    steady = sup.spawn("steady", [sys.executable, "-c", "import time; time.sleep(30)"])
    sup.spawn("crashy", child(starts, "sys.exit(3)"))
    try:
        assert run(sup, 1.7) is None          # the stack keeps running
        assert steady.poll() is None          # the other child was never touched
        times = start_times(starts)
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert len(times) >= 5, times         # 0.1 + 0.2 + 0.4 + 0.4 s of backoff in 1.7 s: at least 5 starts
        assert 0.08 <= gaps[0] < 0.3 and 0.18 <= gaps[1] < 0.45 and 0.38 <= gaps[2] < 0.7, gaps
        assert all(gap < 0.7 for gap in gaps[3:]), gaps  # capped at 0.4 s (plus a Python start-up)
    finally:
        sup.stop()
    assert steady.poll() is not None


def test_a_child_that_keeps_crashing_quickly_stops_the_stack(tmp_path):
    starts = tmp_path / "starts"
    sup = Supervisor({}, backoff_first=0.05, backoff_max=0.1, stable_after=10, max_quick_crashes=4)
    sup.spawn("broken", child(starts, "sys.exit(2)"))
    try:
        failure = run(sup, 10)
    finally:
        sup.stop()
    assert failure is not None and "broken" in failure and "code 2" in failure and "4 times" in failure
    assert len(start_times(starts)) == 4


def test_the_backoff_starts_over_after_a_child_stayed_up(tmp_path):
    """A child that runs a while between crashes (a worker that lost Redis once a day) is never given up on."""
    starts = tmp_path / "starts"
    sup = Supervisor({}, backoff_first=0.1, backoff_max=5, stable_after=0.3, max_quick_crashes=2)
    sup.spawn("flaky", child(starts, "time.sleep(0.4); sys.exit(1)"))
    try:
        assert run(sup, 2.0) is None
    finally:
        sup.stop()
    times = start_times(starts)
    assert len(times) >= 3                                   # crashed and came back again and again
    assert all(b - a < 1.0 for a, b in zip(times, times[1:]))  # each time after the first backoff, not a growing one
