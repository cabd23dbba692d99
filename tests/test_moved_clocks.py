"""The guard against tests that pass only on some days: the tests marked `clock` run again, in a pytest session of
their own, with the clock of every process moved by libfaketime (LD_PRELOAD): pytest, the Celery worker,
gunicorn, and the embedded PostgreSQL and Redis that session starts (an external TEST_DATABASE_URL or
TEST_REDIS_URL is not used there: its clock cannot be moved). Each session starts ten seconds before a moment
where dates turn over: a Sunday midnight (a new ISO week), New Year's Eve, and a daylight-saving change in a test
tenant's time zone.

The moments are computed from today, so the guard keeps testing the days ahead of us whatever day it runs.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from helpers import wait_for
from shared.queueing.redis_conn import redis_client

ROOT = Path(__file__).resolve().parents[1]
MOVED = "WABOT_TEST_MOVED_CLOCK"  # set inside a moved-clock session: the moment it started at, ISO 8601
LEAD = timedelta(seconds=10)


def next_sunday_midnight(now: datetime) -> datetime:
    days = (6 - now.weekday()) % 7
    sunday = (now + timedelta(days=days)).date()
    moment = datetime.combine(sunday + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    return moment if moment - LEAD > now else moment + timedelta(days=7)


def next_new_year(now: datetime) -> datetime:
    return datetime(now.year + 1, 1, 1, tzinfo=timezone.utc)


def next_offset_change(zone: str, now: datetime) -> datetime:
    """The next instant the zone's UTC offset changes (DST changes happen on a whole UTC hour in our zones)."""
    tz = ZoneInfo(zone)
    hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    for _ in range(24 * 400):
        if (hour - timedelta(hours=1)).astimezone(tz).utcoffset() != hour.astimezone(tz).utcoffset():
            return hour
        hour += timedelta(hours=1)
    raise AssertionError(f"{zone} has no offset change within 400 days")


def moments(now: datetime) -> dict[str, datetime]:
    return {"sunday-midnight-utc": next_sunday_midnight(now),
            "new-year-utc": next_new_year(now),
            "dst-change-europe-london": next_offset_change("Europe/London", now)}


def faketime_library() -> str:
    """The libfaketime shared object that the `libfaketime` wheel carries."""
    spec = importlib.util.find_spec("libfaketime")
    assert spec and spec.origin, "the dev extra libfaketime is not installed: run `make test`"
    path = Path(spec.origin).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
    assert path.is_file(), f"{path} is missing from the libfaketime wheel"
    return str(path)


def test_the_moments_are_the_ones_named():
    now = datetime(2026, 12, 1, 4, 55, tzinfo=timezone.utc)  # a Tuesday
    assert moments(now) == {"sunday-midnight-utc": datetime(2026, 12, 7, tzinfo=timezone.utc),
                            "new-year-utc": datetime(2027, 1, 1, tzinfo=timezone.utc),
                            "dst-change-europe-london": datetime(2027, 3, 28, 1, tzinfo=timezone.utc)}
    sunday_late = datetime(2026, 12, 6, 23, 59, 55, tzinfo=timezone.utc)  # too late to start 10 s before
    assert next_sunday_midnight(sunday_late) == datetime(2026, 12, 14, tzinfo=timezone.utc)


def _start_moved_session(name: str, moment: datetime, basetemp: Path) -> tuple[datetime, subprocess.Popen]:
    start = moment - LEAD
    offset = (start - datetime.now(timezone.utc)).total_seconds()
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "TEST_REDIS_URL", "PYTEST_ADDOPTS")}
    env.update({
        "LD_PRELOAD": ":".join(filter(None, [faketime_library(), env.get("LD_PRELOAD")])),
        "FAKETIME": f"{offset:+.3f}",          # an offset, not a fixed time: every process's clock keeps running
        "FAKETIME_DONT_FAKE_MONOTONIC": "1", "DONT_FAKE_MONOTONIC": "1",  # timeouts and sleeps stay real
        MOVED: start.isoformat(),
    })
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-m", "clock", "-q", "-p", "no:cacheprovider",
                             "--basetemp", str(basetemp / name), "-o", "addopts="],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return start, proc


@pytest.mark.skipif(bool(os.environ.get(MOVED)), reason="already inside a moved-clock session")
@pytest.mark.parametrize("name", list(moments(datetime.now(timezone.utc))))
def test_clock_sensitive_tests_pass_with_every_clock_moved(name, tmp_path):
    # one session at a time: run together on two cores, their workers' timeouts start to bite
    start, proc = _start_moved_session(name, moments(datetime.now(timezone.utc))[name], tmp_path)
    try:
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"under the clock moved to {start.isoformat()} ({name}):\n{out[-6000:]}"
    summary = out.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, out[-3000:]


@pytest.mark.clock
@pytest.mark.skipif(not os.environ.get(MOVED), reason="checks the moved-clock sessions themselves")
def test_every_process_reads_the_moved_clock(pg_url, redis_url, db, worker, client, sandbox):
    """Inside a moved-clock session: Python, PostgreSQL, Redis and the worker all agree it is the moved time."""
    from helpers import AUTH, NUMBERS, inbound, new_user

    moved = datetime.fromisoformat(os.environ[MOVED])
    window = (moved - timedelta(seconds=5), moved + timedelta(minutes=10))
    assert window[0] < datetime.now(timezone.utc) < window[1]
    with db("alpha") as conn:
        assert window[0] < conn.execute("SELECT now() AS t").fetchone()["t"] < window[1]
    seconds, _micro = redis_client(redis_url).time()
    assert window[0] < datetime.fromtimestamp(seconds, timezone.utc) < window[1]
    user = new_user()
    assert client.post("/webhooks/infobip", json=inbound(NUMBERS["alpha"], user, {"type": "TEXT", "text": "hi"}),
                       headers=AUTH).status_code == 200
    wait_for(lambda: [r for r in sandbox.requests(path="/whatsapp/1/message/text") if r["json"]["to"] == user],
             what="the reply under the moved clock")
    log_times = [line for line in worker.log().splitlines() if moved.strftime("%Y-%m-%d") in line
                 or (moved + timedelta(minutes=10)).strftime("%Y-%m-%d") in line]
    assert log_times, "the worker's log lines carry no moved date"
