"""Shared parts of bench_turns.py and bare_turns.py: the servers, the processes, CPU accounting, load and stats.

Everything runs on this machine: embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set), the
Infobip sandbox and a fake OpenAI-compatible server in this process, gunicorn and Celery workers as child processes.
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from devtools.sandbox import InfobipSandbox  # noqa: E402

INFOBIP_KEY = "bench-infobip-key"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SEND_PATH = "/whatsapp/1/message/text"


# ---------------------------------------------------------------- servers
@dataclass
class Services:
    pg_url: str
    redis_url: str
    pids: dict = field(default_factory=dict)   # kind -> root pid (postgres, redis) when embedded
    stops: list = field(default_factory=list)

    def stop(self) -> None:
        for stop in reversed(self.stops):
            stop()


def start_services(data_dir: Path) -> Services:
    """Embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL name servers (their CPU is then not counted)."""
    from devtools.devstack import start_postgres, start_redis

    pg_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    svc = Services(pg_url or "", redis_url or "")
    if not pg_url:
        pg = start_postgres(data_dir / "pg")
        svc.pg_url, svc.pids["postgres"] = pg.url, pg.pid
        svc.stops.append(pg.stop)
    if not redis_url:
        rd = start_redis(data_dir / "redis")
        svc.redis_url, svc.pids["redis"] = rd.url, rd.pid
        svc.stops.append(rd.stop)
    return svc


class Recorder(InfobipSandbox):
    """The Infobip sandbox, also noting when each text send arrives (per recipient) and counting every call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.arrivals: dict[str, float] = {}
        self.count = 0  # text sends to a recipient not answered before
        self.calls: dict[str, int] = {}
        self.cond = threading.Condition()

    def _handle(self, request):
        now = time.monotonic()
        response = super()._handle(request)
        path = "read" if request.path.endswith("/read") else request.path
        with self.cond:
            self.calls[path] = self.calls.get(path, 0) + 1
            if request.path == SEND_PATH:
                to = (request.get_json(silent=True) or {}).get("to")
                if to not in self.arrivals:
                    self.arrivals[to] = now
                    self.count += 1
                self.cond.notify_all()
        return response

    def trim(self) -> None:
        """Forget the recorded requests (the base class keeps them all) between phases."""
        self.reset()


def start_fake_openai(api_key: str):
    """tests/fake_openai.FakeOpenAI whose unscripted chat calls wait `delay` seconds and answer a fixed text (no
    mock brain: its CPU would be the bench's, not the bot's). `server.delay` is set per phase."""
    from fake_openai import FakeOpenAI, _json

    class FixedDelayOpenAI(FakeOpenAI):
        delay = 0.0
        chat_calls = 0

        def _chat(self, body, scripted):
            with self._lock:
                type(self).chat_calls += 1
            time.sleep(self.delay)
            return _json({
                "id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"), "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": "Happy to help! We are open 9-17.",
                                         "refusal": None}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}, 200, None)

        def _handle(self, request):  # the base class records every request: keep none
            response = super()._handle(request)
            with self._lock:
                self._requests.clear()
            return response

    return FixedDelayOpenAI(api_keys={api_key}).start()


# ---------------------------------------------------------------- processes
class Proc:
    def __init__(self, kind: str, argv: list[str], env: dict, log_path: Path):
        self.kind, self.log_path = kind, log_path
        self.log_fh = open(log_path, "ab")
        self.popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self.log_fh, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.log_fh.close()


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def start_celery(kind: str, app: str, queues: str, threads: int, env: dict, log_dir: Path) -> Proc:
    argv = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues, "-P", "threads", "-c", str(threads),
            "-n", f"{kind}-{uuid.uuid4().hex[:6]}@%h", "--without-mingle", "--without-gossip", "--loglevel", "INFO"]
    proc = Proc(kind, argv, env, log_dir / f"{kind}.log")
    wait_for(lambda: " ready." in proc.log() or proc.popen.poll() is not None, 60, f"{kind} worker")
    if proc.popen.poll() is not None:
        raise RuntimeError(f"{kind} worker died:\n{proc.log()[-3000:]}")
    return proc


# ---------------------------------------------------------------- CPU of process trees
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree(root: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _ticks(pid: int) -> int:
    """utime+stime of the process plus cutime+cstime (children it reaped: exited postgres backends)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(f) for f in fields[11:15])


def cpu_ms(roots: dict[str, int]) -> dict[str, float]:
    """CPU milliseconds so far of each kind's process tree."""
    kids = _children()
    return {kind: sum(_ticks(p) for p in _tree(pid, kids)) * 1000 / CLK_TCK for kind, pid in roots.items()}


# ---------------------------------------------------------------- load
def new_users(n: int) -> list[str]:
    base = int(time.time() * 1000) % 10**7 * 100
    return [f"1777{base + i:010d}" for i in range(n)]


@dataclass
class PhaseResult:
    name: str
    sent: int
    done: int
    seconds: float
    latencies_ms: list[float]
    cpu: dict[str, float]
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    def cpu_per_turn_all(self) -> dict[str, float]:
        """CPU of the whole phase over every answer of the phase (warm-up and drain included)."""
        n = self.extra.get("answered", self.done)
        return {k: v / n for k, v in self.cpu.items()} if n else {}


def open_loop(send, users: list[str], recorder: Recorder, rate: float, seconds: float, settle: float = 20.0):
    """Send at `rate` per second for `seconds`, one message per user; wait up to `settle` s for the answers.
    Returns {user: latency seconds} of answered users, the number sent and the window of the sends."""
    sent_at: dict[str, float] = {}
    start = time.monotonic()
    for i, user in enumerate(users[: int(rate * seconds)]):
        due = start + i / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        sent_at[user] = time.monotonic()
        send(user)
    wait_answers(recorder, sent_at, settle)
    return sent_at


def wait_answers(recorder: Recorder, sent_at: dict[str, float], settle: float) -> None:
    deadline = time.monotonic() + settle
    with recorder.cond:
        while sum(1 for u in sent_at if u in recorder.arrivals) < len(sent_at) and time.monotonic() < deadline:
            recorder.cond.wait(0.2)


def closed_loop(send, users: list[str], recorder: Recorder, window: int, seconds: float, warmup: float,
                senders: int = 8):
    """Keep `window` messages in flight (each from a new user) for warmup+seconds, then drain; `senders` threads
    post (one poster alone could not keep hundreds in flight). Returns {user: sent_at} and the measured window
    (t0, t1): answers arriving in it count for the rate."""
    it, lock = iter(users), threading.Lock()
    sent_at: dict[str, float] = {}
    start = time.monotonic()
    t0, t1 = start + warmup, start + warmup + seconds
    base = recorder.count

    def sender() -> None:
        while time.monotonic() < t1:
            with recorder.cond:
                if len(sent_at) - (recorder.count - base) >= window:
                    recorder.cond.wait(0.02)
                    continue
                with lock:
                    user = next(it)
                    sent_at[user] = time.monotonic()
            send(user)

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_answers(recorder, sent_at, 60)  # drain before the next phase
    return sent_at, (t0, t1)


def run_phase(name: str, roots: dict[str, int], recorder: Recorder, send, *, rate: float | None = None, seconds: float,
              warmup: float = 3.0, window: int | None = None) -> "PhaseResult":
    """Open loop at `rate` (all answers count) or closed loop with `window` in flight (answers in the measured
    window count for the rate and latency); CPU of `roots` over the whole phase, divided by all answers."""
    users = new_users(20000 if window else int(rate * seconds))
    before, t = cpu_ms(roots), time.monotonic()
    if window:
        sent_at, (t0, t1) = closed_loop(send, users, recorder, window, seconds, warmup)
    else:
        sent_at = open_loop(send, users, recorder, rate, seconds)
        t0, t1 = -1e18, 1e18
    after = cpu_ms(roots)
    with recorder.cond:
        arrivals = {u: recorder.arrivals[u] for u in sent_at if u in recorder.arrivals}
    lat = [(a - sent_at[u]) * 1000 for u, a in arrivals.items() if t0 <= a < t1]
    secs = seconds if window else time.monotonic() - t
    result = PhaseResult(name, len(sent_at), len(lat), secs, lat, {k: after[k] - before[k] for k in roots})
    result.extra["answered"] = len(arrivals)
    if not window:  # open loop: the rate is answers over the sending time, not meaningful as capacity
        result.seconds = seconds
    return result


def format_result(r: "PhaseResult", subtract_ms: float = 0.0) -> str:
    cpu = r.cpu_per_turn_all()
    split = " ".join(f"{k} {v:.1f}" for k, v in cpu.items())
    return (f"{r.name:<26} sent {r.sent:5d} answered {r.extra.get('answered', r.done):5d}  "
            f"turns/s {r.rate:6.1f}  latency ms p50 {r.pct(.5):7.1f} p95 {r.pct(.95):7.1f} p99 {r.pct(.99):7.1f}"
            f"  own p50 {r.pct(.5) - subtract_ms:6.1f}  CPU ms/turn {sum(cpu.values()):6.1f} ({split})")


def median(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")
