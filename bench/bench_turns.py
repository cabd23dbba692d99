"""Turn benchmark: the whole pipeline (gunicorn ingress -> Redis -> inbound worker: store, debounce, turn -> outbox
-> outbound worker -> Infobip sandbox) against the bare baseline of bare_turns.py, on one machine.

Per mode (mock model in process; fake OpenAI-compatible server answering after 0 s or 1 s) it reports latency from
the webhook POST to the send reaching the sandbox (p50/p95/p99; "own" = minus debounce and model time), completed
turns per second at steady state (closed loop: 2 x threads messages in flight, every message from a new user), and
CPU milliseconds per turn of our processes (gunicorn, inbound worker, outbound worker, postgres, redis) from
/proc/<pid>/stat of each process tree. Project and bare phases are interleaved; with --rounds 3, medians.

    .venv/bin/python bench/bench_turns.py --quick        # one round, short phases, under 2 minutes
    .venv/bin/python bench/bench_turns.py                # 3 rounds
    .venv/bin/python bench/bench_turns.py --threads 200 --rounds 1
    .venv/bin/python bench/bench_turns.py --profile 30   # + py-spy of the workers and per-turn round trips
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import turnstack as ts  # noqa: E402
from bare_turns import BareStack, run_bare  # noqa: E402

DEBOUNCE_MS = 200
WEBHOOK_TOKEN = "bench-webhook-token"
LLM_KEY = "sk-bench-0001"
NUMBERS = {"mock": "447100000001", "fake": "447100000002"}
TENANTS = """\
tenants:
  - tenant_id: bm
    waba_number: "+{mock}"
    db_dsn: "${{BM_DSN}}"
    embedding_model: local-hash
    enabled_agents: [orchestrator, db_agent, http_agent]
    config: {{business_name: Bench Mock, timezone: UTC, debounce_ms: {debounce}, rate_limit_tenant: "100000/minute"}}
  - tenant_id: bf
    waba_number: "+{fake}"
    db_dsn: "${{BF_DSN}}"
    embedding_model: local-hash
    enabled_agents: [orchestrator, db_agent, http_agent]
    llm: {{provider: openai, model_chat: gpt-4o-mini, base_url: "${{FAKE_OPENAI_URL}}", api_key: "${{BF_LLM_KEY}}"}}
    config: {{business_name: Bench Fake, timezone: UTC, debounce_ms: {debounce}, rate_limit_tenant: "100000/minute"}}
"""
TEXT = "Hello, how are you?"  # intent by rules (smalltalk): one model call, no tools; see --text


def stack_env(svc: ts.Services, recorder, fake, data: Path, threads: int) -> dict:
    from psycopg.conninfo import make_conninfo

    tenants = data / "tenants.yaml"
    tenants.write_text(TENANTS.format(debounce=DEBOUNCE_MS, **NUMBERS))
    env = dict(os.environ)
    env.update({
        "LLM_PROVIDER": "mock", "REDIS_URL": svc.redis_url, "DATABASE_URL_DEFAULT": svc.pg_url,
        "BM_DSN": make_conninfo(svc.pg_url, dbname="bench_bm"), "BF_DSN": make_conninfo(svc.pg_url, dbname="bench_bf"),
        "FAKE_OPENAI_URL": fake.url, "BF_LLM_KEY": LLM_KEY, "INFOBIP_BASE_URL": recorder.url,
        "INFOBIP_API_KEY": ts.INFOBIP_KEY, "WEBHOOK_VERIFY_TOKEN": WEBHOOK_TOKEN, "TENANTS_FILE": str(tenants),
        "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", "REMINDER_DISPATCH_SECONDS": "3600",
        "WEB_CONCURRENCY": "2", "APP_HOST": "127.0.0.1", "APP_PORT": str(free_port()),
        "DB_POOL_MAX": str(threads), "INBOUND_CONCURRENCY": str(threads),
    })
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProjectStack:
    """gunicorn + inbound worker (-c threads) + outbound worker (outbound,events,scheduled -c 8), as devrun runs."""

    def __init__(self, env: dict, svc: ts.Services, recorder, log_dir: Path, threads: int):
        import requests

        from shared.config.settings import load_settings
        from shared.config.tenants import load_tenants
        from shared.db.migrate import load_migrations, migrate_tenant

        settings = load_settings(env, dotenv=False)
        for tenant in load_tenants(settings, env=env):
            migrate_tenant(tenant, load_migrations(settings.migrations_dir))
        self.recorder, self.threads, self.text = recorder, threads, TEXT
        self.url = f"http://127.0.0.1:{env['APP_PORT']}"
        self.web = ts.Proc("web", [sys.executable, "-m", "gunicorn", "-c", "ingress/gunicorn.conf.py",
                                   "ingress.wsgi:app"], env, log_dir / "web.log")
        self.inbound = ts.start_celery("inbound", "workers", "inbound", threads, env, log_dir)
        self.outbound = ts.start_celery("outbound", "workers", "outbound,events,scheduled", 8, env, log_dir)
        self.session = requests.Session()
        ts.wait_for(self._up, 30, "gunicorn")
        self.roots = {"web": self.web.popen.pid, "inbound": self.inbound.popen.pid,
                      "outbound": self.outbound.popen.pid, **svc.pids}

    def _up(self) -> bool:
        try:
            return self.session.get(self.url + "/health", timeout=1).status_code == 200
        except Exception:
            return False

    def send(self, mode: str):
        from helpers import inbound

        to, local = NUMBERS[mode], threading.local()

        def post(user: str) -> None:
            if not hasattr(local, "session"):
                import requests

                local.session = requests.Session()
            body = inbound(to, user, {"type": "TEXT", "text": self.text})
            r = local.session.post(self.url + "/webhooks/infobip", json=body,
                                  headers={"X-Webhook-Token": WEBHOOK_TOKEN}, timeout=10)
            if r.status_code >= 300:
                raise RuntimeError(f"webhook answered {r.status_code}: {r.text[:200]}")
        return post

    def stop(self) -> None:
        for proc in (self.web, self.inbound, self.outbound):
            proc.stop()


def run_project(stack: ProjectStack, fake, name: str, mode: str, delay: float, **kw) -> ts.PhaseResult:
    fake.delay = delay
    calls0, infobip0 = fake.chat_calls, dict(stack.recorder.calls)
    result = ts.run_phase(name, stack.roots, stack.recorder, stack.send("mock" if mode == "mock" else "fake"), **kw)
    answered = result.extra["answered"] or 1
    result.extra["llm_calls"] = (fake.chat_calls - calls0) / answered
    result.extra["infobip"] = {k: (v - infobip0.get(k, 0)) / answered for k, v in stack.recorder.calls.items()
                               if v != infobip0.get(k, 0)}
    return result


def counters(svc: ts.Services) -> dict[str, float]:
    """Redis commands by name and per-database transaction counts of the bench tenants (cumulative)."""
    import psycopg
    import redis

    out: dict[str, float] = {}
    path = svc.redis_url.split("://", 1)[1]
    client = redis.Redis(unix_socket_path=path) if svc.redis_url.startswith("redis+socket") \
        else redis.Redis.from_url(svc.redis_url)
    for cmd, stats in client.info("commandstats").items():
        out["redis " + cmd.removeprefix("cmdstat_")] = stats["calls"]
    client.close()
    with psycopg.connect(svc.pg_url, autocommit=True) as conn:
        for row in conn.execute("select sum(xact_commit), sum(xact_rollback), sum(tup_inserted), sum(tup_updated),"
                                " sum(tup_deleted) from pg_stat_database where datname like 'bench_%'"):
            for key, value in zip(("commits", "rollbacks", "rows inserted", "rows updated", "rows deleted"), row):
                out["pg " + key] = float(value or 0)
    return out


def per_turn(before: dict, after: dict, turns: int) -> dict[str, float]:
    return {k: (after.get(k, 0) - before.get(k, 0)) / turns for k in after
            if after.get(k, 0) != before.get(k, 0) and turns}


def one_round(project, bare, fake, svc, secs: float, threads: int, counted: dict) -> list[ts.PhaseResult]:
    warm, window = min(3.0, secs / 2), 2 * threads
    before = counters(svc)
    results = [run_project(project, fake, "mock @20/s", "mock", 0.0, rate=20, seconds=secs)]
    time.sleep(1.2)  # postgres flushes its statistics at most once a second
    counted.update(per_turn(before, counters(svc), results[0].extra["answered"]))
    results += [
        run_bare(bare, "bare 0 s @20/s", 0.0, rate=20, seconds=secs),
        run_project(project, fake, "fake 0 s @20/s", "fake", 0.0, rate=20, seconds=secs),
        run_project(project, fake, f"mock closed {window}", "mock", 0.0, seconds=secs, warmup=warm, window=window),
        run_bare(bare, f"bare 0 s closed {window}", 0.0, seconds=secs, warmup=warm, window=window),
        run_project(project, fake, f"fake 1 s closed {window}", "fake", 1.0, seconds=secs, warmup=warm,
                    window=window),
        run_bare(bare, f"bare 1 s closed {window}", 1.0, seconds=secs, warmup=warm, window=window),
    ]
    return results


MODEL_S = {"mock": 0.0, "fake 0 s": 0.0, "fake 1 s": 1.0, "bare 0 s": 0.0, "bare 1 s": 1.0}


def own_ms(r: ts.PhaseResult, q: float) -> float:
    """Latency minus debounce (project phases) and model time (LLM calls per turn x the per-call wait)."""
    model = next(v for k, v in MODEL_S.items() if r.name.startswith(k))
    calls = r.extra.get("llm_calls", 1.0) if r.name.startswith("fake") else 1.0
    debounce = 0 if r.name.startswith("bare") else DEBOUNCE_MS
    return r.pct(q) - debounce - model * calls * 1000


def summarize(rounds: list[list[ts.PhaseResult]]) -> list[str]:
    lines = [f"{'phase':<22} {'turns/s':>8} {'p50':>7} {'p95':>7} {'p99':>7} {'own50':>7} {'own99':>7} "
             f"{'CPU/turn':>8}  CPU ms per turn by process; LLM calls and Infobip calls per turn"]
    for i, first in enumerate(rounds[0]):
        rs = [rnd[i] for rnd in rounds]
        cpu_keys = first.cpu.keys()
        split = {k: ts.median([r.cpu_per_turn_all().get(k, float("nan")) for r in rs]) for k in cpu_keys}
        line = (f"{first.name:<22} {ts.median([r.rate for r in rs]):8.1f} "
                + " ".join(f"{ts.median([r.pct(q) for r in rs]):7.0f}" for q in (.5, .95, .99))
                + f" {ts.median([own_ms(r, .5) for r in rs]):7.0f} {ts.median([own_ms(r, .99) for r in rs]):7.0f}"
                + f" {sum(split.values()):8.1f}  " + " ".join(f"{k} {v:.1f}" for k, v in split.items()))
        if "llm_calls" in first.extra:
            infobip = first.extra["infobip"]
            llm = "in process" if first.name.startswith("mock") else f"{first.extra['llm_calls']:.2f}"
            line += f"; llm {llm}; infobip " + ", ".join(
                f"{k.rsplit('/', 1)[-1]} {v:.2f}" for k, v in infobip.items())
        lines.append(line)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of short phases (under 2 minutes)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3, --quick 1)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per phase (default 15, --quick 5)")
    parser.add_argument("--threads", type=int, default=20, help="inbound worker threads = bare worker threads")
    parser.add_argument("--text", default=TEXT, help="the text every user sends")
    parser.add_argument("--profile", type=float, default=0, help="then profile the workers for this many seconds")
    args = parser.parse_args()
    rounds_n = args.rounds or (1 if args.quick else 3)
    secs = args.seconds or (5 if args.quick else 15)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_turns_") as tmp:
        data = Path(tmp)
        svc = ts.start_services(data)
        recorder = ts.Recorder(api_key=ts.INFOBIP_KEY).start()
        fake = ts.start_fake_openai(LLM_KEY)
        project = bare = None
        try:
            env = stack_env(svc, recorder, fake, data, args.threads)
            project = ProjectStack(env, svc, recorder, data, args.threads)
            project.text = args.text
            bare = BareStack(svc.redis_url, recorder, args.threads, data, svc.pids.get("redis"))
            print(f"stack up in {time.monotonic() - started:.1f}s; debounce {DEBOUNCE_MS} ms, {args.threads} inbound "
                  f"threads (bare: same), outbound 8; {secs:g} s phases, {rounds_n} round(s); text {args.text!r}",
                  flush=True)
            rounds, counted = [], {}
            for n in range(rounds_n):
                rounds.append(one_round(project, bare, fake, svc, secs, args.threads, counted))
                for r in rounds[-1]:
                    print(f"round {n + 1}: " + ts.format_result(r), flush=True)
            print("\nper turn at mock @20/s: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(counted.items())))
            if args.profile:
                import profile_turns

                profile_turns.profile(project, svc, data, args.profile, run_project, fake)
            print(f"\nmedians of {rounds_n} round(s), latency in ms, own = latency - debounce - model time:")
            print("\n".join(summarize(rounds)))
            print(f"total {time.monotonic() - started:.0f}s")
            print_last_lines(rounds)
        finally:
            for stack in (project, bare):
                if stack is not None:
                    stack.stop()
            fake.stop()
            recorder.stop()
            svc.stop()
    return 0


def print_last_lines(rounds: list[list[ts.PhaseResult]]) -> None:
    def med(prefix: str, f) -> float:
        return ts.median([f(r) for rnd in rounds for r in rnd if r.name.startswith(prefix)])

    ratio = med("fake 1 s closed", lambda r: r.rate) / med("bare 1 s closed", lambda r: r.rate)
    print(f"turns/bare at 1 s model: {ratio:.2f}")
    print(f"own ms per turn p50: {med('mock @20/s', lambda r: own_ms(r, .5)):.0f}")


if __name__ == "__main__":
    sys.exit(main())
