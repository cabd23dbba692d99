"""LLM providers through the real `openai` SDK against a local OpenAI-compatible server (tests/fake_openai.py):
tool calls, embeddings, presets, key rotation, fallback, per-tenant precedence (env < yaml < DB row) and the
`wabot providers` CLI against a real tenant database. No key value may reach a log line or an error message.
"""
from __future__ import annotations

import json
import logging
import threading

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import fresh_dsn
from fake_openai import FakeOpenAI
from devtools import cli
from shared.db.migrate import migrate_tenant
from shared.errors import ConfigError
from shared.llm import LLMError
from shared.llm.factory import provider_for
from shared.llm.base import answered_by
from shared.config.providers import ProviderCache, resolve_llm
from shared.llm.openai_compat import OpenAICompatProvider
from shared.config.settings import load_settings
from shared.config.tenants import parse_tenants

K1, K2, K3 = "sk-test-FIRST-0123456789abcdef", "sk-test-SECOND-0123456789abcdef", "sk-test-THIRD-0123456789abcdef"
SECRETS = (K1, K2, K3)
TOOLS = [{"type": "function", "function": {"name": "set_reminder", "description": "Remind the user later",
                                           "parameters": {"type": "object", "properties": {
                                               "text": {"type": "string"}, "due_at": {"type": "string"}}}}}]
HELLO = [{"role": "system", "content": "You are the assistant of Gamma Gym."}, {"role": "user", "content": "hello"}]
BASE_ENV = {"REDIS_URL": "redis://127.0.0.1:1/0", "WEBHOOK_VERIFY_TOKEN": "t", "INFOBIP_BASE_URL": "http://127.0.0.1:1",
            "INFOBIP_API_KEY": "ib"}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def fake_server():
    server = FakeOpenAI(api_keys={K1, K2, K3}).start()
    yield server
    server.stop()


@pytest.fixture
def fake(fake_server):
    fake_server.api_keys = {K1, K2, K3}
    fake_server.reset()
    return fake_server


@pytest.fixture
def secret_logs(caplog):
    """Every log record of the test, at DEBUG (the SDK's too); the test fails if a key shows up in one."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    for record in caplog.records:
        text = repr(record.__dict__) + record.getMessage()
        assert not any(k in text for k in SECRETS), f"a key leaked into the log: {record.getMessage()}"


def chat_keys(fake: FakeOpenAI) -> list[str | None]:
    return fake.keys_used("/v1/chat/completions")


def provider(fake: FakeOpenAI, keys=(K1,), **kw) -> OpenAICompatProvider:
    return OpenAICompatProvider(name=kw.pop("name", "openai"), model=kw.pop("model", "gpt-4o-mini"), api_keys=keys,
                                base_url=fake.url, embed_model=kw.pop("embed_model", "text-embedding-3-small"),
                                max_retries=kw.pop("max_retries", 0), **kw)


def assert_no_secret(text: str) -> None:
    assert not any(k in text for k in SECRETS), text


# ---- chat, tools, embeddings, presets

def test_chat_answers_and_tool_calls_are_parsed(fake, secret_logs):
    llm = provider(fake)
    answer = llm.chat(HELLO)
    assert answer.content.startswith("Hello! I'm the assistant of Gamma Gym")
    assert answer.usage.total_tokens > 0 and answer.model == "gpt-4o-mini" and answer.provider == "openai"

    # the date is only parsed and compared as text here, never against today
    fake.script({"tool_calls": [{"name": "set_reminder", "arguments": {"text": "dentist", "due_at": "2026-11-26"}}]})
    result = llm.chat([{"role": "user", "content": "remind me about the dentist tomorrow"}], tools=TOOLS)
    assert result.content is None and result.finish_reason == "tool_calls"
    (call,) = result.tool_calls
    assert call.name == "set_reminder" and call.id.startswith("call_")
    assert json.loads(call.arguments) == {"text": "dentist", "due_at": "2026-11-26"}
    sent = fake.requests[-1]
    assert sent["json"]["tools"] == TOOLS and sent["json"]["model"] == "gpt-4o-mini"
    assert sent["headers"]["Authorization"] == f"Bearer {K1}"


def test_embeddings_come_back_in_order_with_the_configured_model(fake):
    llm = provider(fake, embed_model="text-embedding-3-small")
    vectors = llm.embed(["dentist appointment", "bike repair", "dentist appointment"])
    assert len(vectors) == 3 and all(len(v) == 256 for v in vectors)
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    assert fake.requests[-1]["path"] == "/v1/embeddings"
    assert fake.requests[-1]["json"]["model"] == "text-embedding-3-small"


def test_presets_deepseek_has_its_url_and_model_and_no_embeddings(fake):
    ds = OpenAICompatProvider(name="deepseek", api_key=K1, embed_model="text-embedding-3-small")
    assert (ds.base_url, ds.model) == ("https://api.deepseek.com", "deepseek-chat")
    with pytest.raises(LLMError) as err:
        ds.embed(["hello"])
    assert err.value.retryable is False and "no embeddings" in str(err.value)
    assert OpenAICompatProvider(name="ollama").base_url == "http://localhost:11434/v1"
    # Through tenants.yaml: provider deepseek pointed at our server speaks the same wire format, model deepseek-chat.
    settings = load_settings({**BASE_ENV, "DATABASE_URL_DEFAULT": "postgresql://u@h/x"}, dotenv=False)
    t = parse_tenants({"tenants": [{"tenant_id": "ds", "waba_number": "+447000000077", "embedding_model": "local-hash",
                                    "llm": {"provider": "deepseek", "api_key": K1, "base_url": fake.url,
                                            "max_retries": 0}}]}, settings, {}).require("ds")
    assert t.llm.model_chat == "deepseek-chat"
    assert provider_for(t.llm).chat(HELLO).model == "deepseek-chat"
    assert fake.requests[-1]["json"]["model"] == "deepseek-chat"


# ---- key rotation

def test_a_rejected_key_is_set_aside_and_the_next_key_answers(fake, secret_logs):
    fake.api_keys = {K2}  # K1 was revoked
    llm = provider(fake, keys=(K1, K2))
    assert llm.chat(HELLO).content
    assert chat_keys(fake) == [K1, K2]
    assert llm.chat(HELLO).content and llm.embed(["x"])
    assert chat_keys(fake) == [K1, K2, K2], "a key that answered 401 must not be used again"
    assert fake.keys_used("/v1/embeddings") == [K2]
    assert any(getattr(r, "key_index", None) == 0 for r in secret_logs.records)


def test_rate_limited_key_cools_down_then_comes_back(fake, secret_logs):
    clock = Clock()
    llm = provider(fake, keys=(K1, K2), max_retries=2, clock=clock)  # SDK retries on, still rotates at once
    fake.script({"status": 429})
    assert llm.chat(HELLO).content
    assert chat_keys(fake) == [K1, K2]
    llm.chat(HELLO)
    assert chat_keys(fake)[-1] == K2, "the rate-limited key is cooling down"
    clock.now += 61
    llm.chat(HELLO), llm.chat(HELLO)
    assert K1 in chat_keys(fake)[3:], "after the cool-down the key is used again"


def test_every_key_set_aside_is_an_llm_error_without_keys(fake, secret_logs):
    llm = provider(fake, keys=(K1, K2))
    fake.script({"status": 429}, {"status": 429})
    with pytest.raises(LLMError) as err:
        llm.chat(HELLO)
    assert err.value.retryable is True and err.value.status == 429
    assert "key #0" in str(err.value) and "key #1" in str(err.value)
    assert_no_secret(str(err.value))

    fake.api_keys = set()
    revoked = provider(fake, keys=(K1, K2, K3))
    with pytest.raises(LLMError) as err:
        revoked.chat(HELLO)
    assert err.value.retryable is False and err.value.status == 401
    assert_no_secret(str(err.value) + repr(revoked))


def test_rotation_under_concurrent_turns(fake):
    fake.api_keys = {K3}
    llm = provider(fake, keys=(K1, K2, K3))
    answers, errors = [], []

    def turn():
        try:
            answers.append(llm.chat(HELLO).content)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=turn) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(answers) == 8
    before = len(chat_keys(fake))
    llm.chat(HELLO)
    assert chat_keys(fake)[before:] == [K3]


# ---- fallback

def test_fallback_answers_when_the_primary_fails_and_says_who_answered(fake, secret_logs, monkeypatch):
    backup = FakeOpenAI().start()  # a local Ollama-like server: no keys
    try:
        monkeypatch.setenv("GAMMA_BACKUP_KEY", K3)
        settings = load_settings({**BASE_ENV, "DATABASE_URL_DEFAULT": "postgresql://u@h/x"}, dotenv=False)
        doc = {"tenant_id": "fb", "waba_number": "+447000000078", "embedding_model": "local-hash",
               "llm": {"provider": "openai", "model_chat": "primary-model", "base_url": fake.url, "api_key": K1,
                       "max_retries": 1,
                       "fallback": {"provider": "ollama", "model_chat": "backup-model", "base_url": backup.url}}}
        llm = provider_for(parse_tenants({"tenants": [doc]}, settings, {}).require("fb").llm)
        # 500 twice: the SDK's own retry (fast: Retry-After 1 ms), then the primary gives up.
        fake.script(*[{"status": 500, "headers": {"retry-after-ms": "1"}}] * 2)
        result = llm.chat(HELLO, tools=TOOLS)
        assert len(chat_keys(fake)) == 2, "the SDK retried the primary before failing over"
        assert result.content.startswith("Hello!")
        assert (result.provider, result.model) == ("ollama", "backup-model")
        assert answered_by(result, llm) == ("ollama", "backup-model")
        assert backup.requests[-1]["json"]["tools"] == TOOLS
        assert any("fallback answers" in r.getMessage() for r in secret_logs.records)
        # The primary is healthy again: it answers, and says so.
        assert answered_by(llm.chat(HELLO), llm) == ("openai", "primary-model")

        backup.stop()
        fake.script({"status": 500, "headers": {"retry-after-ms": "1"}}, {"status": 500})
        with pytest.raises(LLMError) as err:
            llm.chat(HELLO)
        assert "both failed" in str(err.value)
        assert_no_secret(str(err.value))
    finally:
        backup.stop()


# ---- per-tenant configuration: env < tenants.yaml < active llm_providers row

def gamma(pg_url: str, fake: FakeOpenAI, llm: dict | None, env: dict | None = None):
    """A tenant on a database of its own (so its llm_providers table is ours alone), migrated."""
    env = {**BASE_ENV, "DATABASE_URL_DEFAULT": pg_url, "LLM_PROVIDER": "openai", "LLM_API_KEY": K1,
           "LLM_MODEL_CHAT": "env-model", "LLM_BASE_URL": fake.url, **(env or {})}
    doc = {"tenant_id": "gamma", "waba_number": "+447000000079", "db_dsn": fresh_dsn(pg_url, "gamma"),
           "embedding_model": "local-hash"}
    if llm is not None:
        doc["llm"] = llm
    tenant = parse_tenants({"tenants": [doc]}, load_settings(env, dotenv=False), env).require("gamma")
    migrate_tenant(tenant)
    return tenant


def test_precedence_env_then_yaml_then_active_row(pg_url, fake, monkeypatch, secret_logs):
    from devtools.cli_providers import add_row, set_active

    monkeypatch.setenv("WABOT_LLM_KEY_GAMMA_DB", K2)
    env_only = gamma(pg_url, fake, None)
    assert (env_only.llm.provider, env_only.llm.model_chat, env_only.llm.source) == ("openai", "env-model", "env")

    tenant = gamma(pg_url, fake, {"model_chat": "yaml-model", "max_retries": 0})
    clock = Clock()
    cache = ProviderCache(ttl_seconds=30, clock=clock)
    with psycopg.connect(tenant.db_dsn) as conn:
        assert resolve_llm(tenant, conn).model_chat == "yaml-model"
        llm = cache.get(tenant, conn)
        assert llm.chat(HELLO).model == "yaml-model"

        add_row(conn, name="db-main", provider="openai", model="db-model", base_url=fake.url,
                api_key_envs=["WABOT_LLM_KEY_GAMMA_DB"])
        set_active(conn, "db-main")
        conn.commit()
        assert cache.get(tenant, conn) is llm, "within the TTL running workers keep their provider"
        clock.now += 31
        llm = cache.get(tenant, conn)
        answer = llm.chat(HELLO)
        assert answer.model == "db-model" and chat_keys(fake)[-1] == K2
        assert resolve_llm(tenant, conn).source == "llm_providers:db-main"

        clock.now += 31
        assert cache.get(tenant, conn) is llm, "unchanged settings keep the provider (and its keys' state)"

        set_active(conn, None)
        conn.commit()
        clock.now += 31
        assert cache.get(tenant, conn).chat(HELLO).model == "yaml-model"


def test_active_row_fallback_and_unset_variable(pg_url, fake, monkeypatch, secret_logs):
    from devtools.cli_providers import add_row, set_active

    monkeypatch.setenv("WABOT_LLM_KEY_GAMMA_A", K1)
    monkeypatch.delenv("WABOT_LLM_KEY_GAMMA_MISSING", raising=False)
    tenant = gamma(pg_url, fake, {"max_retries": 0})
    with psycopg.connect(tenant.db_dsn, autocommit=True) as conn:
        add_row(conn, name="spare", provider="openai", model="spare-model", base_url=fake.url,
                api_key_envs=["WABOT_LLM_KEY_GAMMA_A"])
        add_row(conn, name="main", provider="openai", model="main-model", base_url=fake.url,
                api_key_envs=["WABOT_LLM_KEY_GAMMA_A"], fallback="spare")
        set_active(conn, "main")
        llm = ProviderCache().get(tenant, conn)
        fake.script({"status": 500})
        assert answered_by(llm.chat(HELLO), llm) == ("openai", "spare-model")

        add_row(conn, name="broken", provider="openai", api_key_envs=["WABOT_LLM_KEY_GAMMA_MISSING"])
        set_active(conn, "broken")
        with pytest.raises(ConfigError) as err:
            resolve_llm(tenant, conn)
        assert "'broken'" in str(err.value) and "WABOT_LLM_KEY_GAMMA_MISSING" in str(err.value)


def broken_row_errors(records) -> list[logging.LogRecord]:
    return [r for r in records if r.name == "shared.config.providers" and r.levelno == logging.ERROR]


def test_an_unusable_active_row_keeps_turns_answering(pg_url, fake, monkeypatch, secret_logs):
    """A row naming a variable the workers do not have: the turn still gets a provider, the error is logged (with
    the row and the variable, without a key) once per TTL, and the fixed row is picked up at the next check."""
    from devtools.cli_providers import add_row, set_active

    monkeypatch.setenv("WABOT_LLM_KEY_GAMMA_A", K1)
    monkeypatch.delenv("WABOT_LLM_KEY_GAMMA_MISSING", raising=False)
    tenant = gamma(pg_url, fake, {"model_chat": "yaml-model", "max_retries": 0})
    with psycopg.connect(tenant.db_dsn, autocommit=True) as conn:
        add_row(conn, name="good", provider="openai", model="good-model", base_url=fake.url,
                api_key_envs=["WABOT_LLM_KEY_GAMMA_A"])
        add_row(conn, name="broken", provider="openai", model="broken-model", base_url=fake.url,
                api_key_envs=["WABOT_LLM_KEY_GAMMA_MISSING"])

        # A worker that already had a provider keeps it.
        clock = Clock()
        cache = ProviderCache(ttl_seconds=30, clock=clock)
        set_active(conn, "good")
        good = cache.get(tenant, conn)
        set_active(conn, "broken")
        clock.now += 31
        assert cache.get(tenant, conn) is good
        assert good.chat(HELLO).model == "good-model"
        [logged] = broken_row_errors(secret_logs.records)
        assert logged.tenant_id == "gamma" and "'broken'" in logged.error
        assert "WABOT_LLM_KEY_GAMMA_MISSING" in logged.error

        clock.now += 10   # within the TTL: neither re-read nor logged again
        assert cache.get(tenant, conn) is good
        assert len(broken_row_errors(secret_logs.records)) == 1
        clock.now += 31   # the next check: still broken, logged once more
        assert cache.get(tenant, conn) is good
        assert len(broken_row_errors(secret_logs.records)) == 2

        # A worker that starts while the row is broken uses tenants.yaml.
        fresh = ProviderCache(ttl_seconds=30, clock=clock)
        assert fresh.get(tenant, conn).chat(HELLO).model == "yaml-model"

        # The row is fixed (the variable is now set): the next check after the TTL uses it.
        monkeypatch.setenv("WABOT_LLM_KEY_GAMMA_MISSING", K2)
        clock.now += 31
        assert fresh.get(tenant, conn).chat(HELLO).model == "broken-model"
        assert chat_keys(fake)[-1] == K2


# ---- tenants.yaml validation of the llm block

def test_yaml_llm_block_keys_and_errors(fake, monkeypatch):
    settings = load_settings({**BASE_ENV, "DATABASE_URL_DEFAULT": "postgresql://u@h/x"}, dotenv=False)

    def llm(block, env=None):
        doc = {"tenant_id": "y", "waba_number": "+447000000080", "embedding_model": "local-hash", "llm": block}
        return parse_tenants({"tenants": [doc]}, settings, env or {}).require("y").llm

    cfg = llm({"provider": "openai", "api_keys": ["${A}", "${B}"]}, {"A": K1, "B": K2})
    assert cfg.keys == (K1, K2) and cfg.api_key == K1
    cfg = llm({"provider": "openai", "api_key_envs": ["WABOT_LLM_KEY_A", "WABOT_LLM_KEY_B"]},
              {"WABOT_LLM_KEY_A": K1, "WABOT_LLM_KEY_B": K2})
    assert cfg.keys == (K1, K2)
    assert_no_secret(repr(cfg))
    for block, message in [({"provider": "openai", "api_key_envs": ["WABOT_LLM_KEY_NOPE"]},
                            "variable WABOT_LLM_KEY_NOPE"),
                           ({"provider": "openai", "api_key": K1, "modell": "x"}, r"unknown field\(s\) modell"),
                           ({"provider": "openai", "api_key": K1, "max_retries": -1}, "llm.max_retries"),
                           ({"provider": "openai", "api_key": K1, "fallback": {"provider": "deepseek"}},
                            "llm.fallback.api_key")]:
        with pytest.raises(ConfigError, match=message) as err:
            llm(block)
        assert_no_secret(str(err.value))


# ---- the CLI

@pytest.fixture
def cli_tenant(pg_url, fake, monkeypatch, tmp_path):
    """A tenants file with one migrated tenant, and the environment `wabot` reads."""
    dsn = fresh_dsn(pg_url, "cli")
    (tmp_path / "tenants.yaml").write_text(
        f'tenants:\n  - tenant_id: gamma\n    waba_number: "+447000000081"\n    db_dsn: "{dsn}"\n'
        f"    embedding_model: local-hash\n")
    for k, v in {**BASE_ENV, "TENANTS_FILE": str(tmp_path / "tenants.yaml"), "LLM_PROVIDER": "mock",
                 "DATABASE_URL_DEFAULT": pg_url, "WABOT_LLM_KEY_GAMMA_1": K1, "WABOT_LLM_KEY_GAMMA_2": K2}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    assert cli.main(["migrate", "--tenant", "gamma"]) == 0
    return dsn


def rows(dsn: str) -> dict[str, dict]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return {r["name"]: r for r in conn.execute("SELECT * FROM llm_providers")}


def test_cli_add_list_set_active(cli_tenant, fake, capsys):
    run = cli.main
    assert run(["providers", "add", "--tenant", "gamma", "--name", "main", "--provider", "openai", "--model",
                "gpt-4o", "--base-url", fake.url, "--api-key-env", "WABOT_LLM_KEY_GAMMA_1",
                "WABOT_LLM_KEY_GAMMA_2"]) == 0
    assert run(["providers", "add", "--tenant", "gamma", "--name", "local", "--provider", "ollama"]) == 0
    assert run(["providers", "add", "--tenant", "gamma", "--name", "ds", "--provider", "deepseek",
                "--api-key-env", "WABOT_LLM_KEY_GAMMA_2", "--fallback", "local", "--embed-model", "local-hash"]) == 0
    stored = rows(cli_tenant)
    assert stored["main"]["api_key_envs"] == ["WABOT_LLM_KEY_GAMMA_1", "WABOT_LLM_KEY_GAMMA_2"]
    assert stored["ds"]["fallback"] == "local"
    assert not any(r["is_active"] for r in stored.values())
    capsys.readouterr()

    assert run(["providers", "list", "--tenant", "gamma"]) == 0
    out = capsys.readouterr().out
    assert "no active row; tenants.yaml is in effect" in out
    assert "main: openai/gpt-4o" in out and "keys=WABOT_LLM_KEY_GAMMA_1,WABOT_LLM_KEY_GAMMA_2" in out
    assert "fallback=local" in out

    assert run(["providers", "set-active", "--tenant", "gamma", "main"]) == 0
    assert run(["providers", "set-active", "--tenant", "gamma", "ds"]) == 0
    assert [n for n, r in rows(cli_tenant).items() if r["is_active"]] == ["ds"]
    capsys.readouterr()
    assert run(["providers", "list", "--tenant", "gamma"]) == 0
    assert "* ds: deepseek/deepseek-chat" in capsys.readouterr().out

    assert run(["providers", "set-active", "--tenant", "gamma", "nope"]) == 2
    assert "no provider named 'nope'" in capsys.readouterr().err
    assert [n for n, r in rows(cli_tenant).items() if r["is_active"]] == ["ds"], "a failed switch changes nothing"

    assert run(["providers", "set-active", "--tenant", "gamma", "--none"]) == 0
    assert not any(r["is_active"] for r in rows(cli_tenant).values())
    assert_no_secret(capsys.readouterr().out)


@pytest.mark.parametrize("args,message", [
    (["--name", "x", "--provider", "claude"], "--provider must be one of"),
    (["--name", "x", "--provider", "openai"], "needs --api-key-env"),
    (["--name", "x", "--provider", "openai", "--api-key-env", K1], "--api-key-env #1 is not an environment variable"),
    (["--name", "bad name", "--provider", "ollama"], "--name must be"),
    (["--name", "x", "--provider", "ollama", "--base-url", "ftp://h"], "--base-url must be"),
    (["--name", "x", "--provider", "ollama", "--fallback", "ghost"], "--fallback 'ghost' is not a provider row"),
    (["--name", "x", "--provider", "ollama", "--fallback", "x"], "not the row itself"),
    (["--name", "x", "--provider", "ollama", "--embed-model", "text-embedding-3-large"], "256-dimensional"),
])
def test_cli_add_refuses_bad_input_without_echoing_keys(cli_tenant, capsys, args, message):
    assert cli.main(["providers", "add", "--tenant", "gamma", *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert_no_secret(captured.out + captured.err)
    assert rows(cli_tenant) == {}


def test_cli_duplicate_name_unknown_tenant_and_missing_argument(cli_tenant, capsys):
    assert cli.main(["providers", "add", "--tenant", "gamma", "--name", "a", "--provider", "ollama"]) == 0
    assert cli.main(["providers", "add", "--tenant", "gamma", "--name", "a", "--provider", "ollama"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["providers", "list", "--tenant", "nobody"]) == 2
    assert "unknown tenant 'nobody'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["providers", "set-active", "--tenant", "gamma"])  # neither a name nor --none
    assert exit_.value.code == 2
