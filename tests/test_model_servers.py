"""Issue 10: what real OpenAI-compatible servers need (llama.cpp, Ollama, vLLM), and outages measured in seconds.

Provider-level tests talk real HTTP to tests/fake_openai.py through the `openai` SDK; the outage tests run the
bot's own web and worker processes, with Redis of their own, against a primary that hangs.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import psycopg
import pytest
import redis
import requests
from psycopg.rows import dict_row

from conftest import free_port, fresh_dsn, start_web, start_worker
from devtools.devstack import start_redis
from fake_openai import FakeOpenAI
from helpers import AUTH, OFFLINE_ENV, inbound, new_user, wait_for
from shared.config.llm import LLMSettings
from shared.config.settings import load_settings
from shared.config.tenants import load_tenants, parse_tenants
from shared.conversation.prompt import Knowledge, build_prompt
from shared.db.migrate import migrate_tenant
from shared.llm.base import LLMError
from shared.llm.breaker import Breakers, CircuitOpen
from shared.llm.factory import provider_for
from shared.llm.openai_compat import OpenAICompatProvider
from shared.tools.schema import GRAMMAR_HEAVY_KEYWORDS
from shared.tools.registry import build_registry
from workers.inbound import llm_retry_in


@pytest.fixture
def server():
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def backup():
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def chats(fake) -> list[dict]:
    return [r["json"] for r in fake.requests if r["path"] == "/v1/chat/completions"]


def keywords_in(schema) -> set[str]:
    if isinstance(schema, list):
        return set().union(*(keywords_in(s) for s in schema)) if schema else set()
    if not isinstance(schema, dict):
        return set()
    found = {k for k in schema if k in GRAMMAR_HEAVY_KEYWORDS}
    for key, value in schema.items():
        if key == "properties":
            found |= set().union(*(keywords_in(v) for v in value.values())) if value else set()
        else:
            found |= keywords_in(value)
    return found


def builtin_tools(tenants) -> list[dict]:
    registry = build_registry(tenants.require("alpha"))
    return registry.openai_schemas(registry.names(group="db"))


USER = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "hi there"}]


# ---------------------------------------------------------------- requests that work across servers

def test_offered_tools_go_with_tool_choice_auto_and_every_call_has_an_output_cap(server, tenants):
    tools = builtin_tools(tenants)
    llm = OpenAICompatProvider(name="openai", api_key="k", base_url=server.url, max_tokens=300)
    llm.chat(USER, tools=tools)
    llm.chat(USER)
    with_tools, without = chats(server)
    assert with_tools["tool_choice"] == "auto" and len(with_tools["tools"]) == len(tools)
    assert "tool_choice" not in without and "tools" not in without
    # OpenAI's newer models take only max_completion_tokens; llama.cpp, Ollama, vLLM and DeepSeek take max_tokens
    assert with_tools["max_completion_tokens"] == 300 == without["max_completion_tokens"]
    OpenAICompatProvider(name="llamacpp", base_url=server.url, max_tokens=64).chat(USER)
    assert chats(server)[-1]["max_tokens"] == 64


def test_grammar_servers_get_simplified_schemas_and_our_validation_keeps_the_limits(server, tenants):
    tools = builtin_tools(tenants)
    assert keywords_in([t["function"]["parameters"] for t in tools]), "the built-in tools have limits to drop"
    OpenAICompatProvider(name="llamacpp", base_url=server.url).chat(USER, tools=tools)
    sent = chats(server)[-1]["tools"]
    assert [t["function"]["name"] for t in sent] == [t["function"]["name"] for t in tools]
    assert keywords_in([t["function"]["parameters"] for t in sent]) == set()
    assert all(t["function"]["parameters"]["type"] == "object" for t in sent)
    # the limits still hold where the arguments are checked: our registry refuses an over-long title
    registry = build_registry(tenants.require("alpha"))
    outcome = registry.call(None, "upsert_item", json.dumps({"kind": "note", "title": "x" * 5000, "content": "y"}))
    assert outcome.is_error and outcome.error_kind == "invalid_arguments"
    # a tenant may ask for the full schemas anyway (a server known to take them)
    OpenAICompatProvider(name="llamacpp", base_url=server.url, tool_schema="full").chat(USER, tools=tools)
    assert chats(server)[-1]["tools"] == tools


def test_an_assistant_message_without_text_is_sent_with_empty_content_not_null(server):
    llm = OpenAICompatProvider(name="llamacpp", base_url=server.url)
    call = {"id": "call_1", "type": "function", "function": {"name": "list_events", "arguments": "{}"}}
    llm.chat([*USER, {"role": "assistant", "content": None, "tool_calls": [call]},
              {"role": "tool", "tool_call_id": "call_1", "content": "[]"}])
    sent = chats(server)[-1]["messages"]
    assert sent[2]["content"] == "" and all(m["content"] is not None for m in sent)


def test_html_entities_of_a_chat_template_are_unescaped(server):
    server.script({"content": "It&#39;s at 5 &amp; bring the card &lt;3"})
    assert OpenAICompatProvider(name="llamacpp", base_url=server.url).chat(USER).content == \
        "It's at 5 & bring the card <3"
    server.script({"content": "Tom &amp; Jerry"})  # OpenAI's text is the model's own: left as it is
    assert OpenAICompatProvider(name="openai", api_key="k", base_url=server.url).chat(USER).content == "Tom &amp; Jerry"


def test_template_driven_servers_get_one_system_message_first_and_alternating_roles(server, tenants):
    """Gemma's and Mistral's chat templates raise on a system message that is not the first; the prompt has the
    summary after the system prompt and the turn's context (time, passages, memories) before the new message."""
    history = [{"role": "user", "body": "I'm Ana"}, {"role": "assistant", "body": "Hi Ana!"}]
    prompt = build_prompt(tenants.require("alpha"), datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc), history,
                          "When do you open?", memories=["Ana likes mornings"], summary="Ana booked a cleaning.",
                          knowledge=Knowledge((("Hours", "We open at 9:00."),), True))
    assert [m["role"] for m in prompt.messages].count("system") == 3  # what the prefix cache wants
    OpenAICompatProvider(name="llamacpp", base_url=server.url).chat(prompt.messages)
    sent = chats(server)[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert "Ana booked a cleaning." in sent[0]["content"]
    assert "We open at 9:00." in sent[3]["content"] and "Ana likes mornings" in sent[3]["content"]
    assert sent[3]["content"].endswith("When do you open?")
    OpenAICompatProvider(name="openai", api_key="k", base_url=server.url).chat(prompt.messages)
    assert [m["role"] for m in chats(server)[-1]["messages"]] == [m["role"] for m in prompt.messages]


# ---------------------------------------------------------------- empty answers

def test_an_empty_answer_is_asked_again_once_without_tools(server, tenants):
    server.script({"content": ""}, {"content": "Here you are."})
    result = OpenAICompatProvider(name="llamacpp", base_url=server.url).chat(USER, tools=builtin_tools(tenants))
    assert result.content == "Here you are."
    first, second = chats(server)[-2:]
    assert "tools" in first and "tools" not in second
    assert second["messages"][:-1] == first["messages"] and "empty" in second["messages"][-1]["content"]
    assert result.usage.prompt_tokens > 0


def test_two_empty_answers_fail_the_call_and_the_fallback_answers(server, backup):
    server.script({"content": ""}, {"content": "  "})
    with pytest.raises(LLMError, match="answered nothing") as raised:
        OpenAICompatProvider(name="llamacpp", base_url=server.url).chat(USER)
    assert raised.value.retryable is False

    server.script({"content": ""}, {"content": ""})
    backup.script({"content": "From the backup."})
    llm = provider_for(_settings(server, timeout=5, fallback=_settings(backup, name="backup")))
    result = llm.chat(USER)
    assert (result.content, result.entry) == ("From the backup.", "backup")


# ---------------------------------------------------------------- deadlines and the circuit breaker

def _settings(fake, *, name="primary", timeout=2.0, fallback=None, circuit=30.0) -> LLMSettings:
    return LLMSettings(provider="openai", model_chat="gpt-4o-mini", model_embed="text-embedding-3-small",
                       base_url=fake.url, api_key="sk-test", timeout=timeout, max_retries=2, fallback=fallback,
                       name=name, circuit_seconds=circuit)


def test_one_deadline_covers_every_attempt_of_a_call(server):
    server.script(*[{"content": "late", "delay": 5}] * 3)
    llm = OpenAICompatProvider(name="openai", api_key="k", base_url=server.url, timeout=1.0, max_retries=2)
    started = time.monotonic()
    with pytest.raises(LLMError, match="deadline") as raised:
        llm.chat(USER)
    assert time.monotonic() - started < 2.5  # one 1 s deadline, not 1 s x 3 attempts
    assert raised.value.outage and raised.value.retryable
    assert len(chats(server)) == 1


def test_5xx_is_retried_inside_the_deadline(server):
    server.script({"status": 503}, {"content": "fine now"})
    llm = OpenAICompatProvider(name="openai", api_key="k", base_url=server.url, timeout=10, max_retries=2)
    assert llm.chat(USER).content == "fine now"
    assert len(chats(server)) == 2


@pytest.fixture
def shared_redis(tmp_path):
    server = start_redis(tmp_path / "redis")
    yield redis.Redis.from_url(server.url.replace("redis+socket://", "unix://"))
    server.stop()


def test_a_hung_primary_is_skipped_by_every_process_until_it_answers_again(server, backup, shared_redis):
    """Two Breakers on one Redis are two worker processes: what one learns, the other skips."""
    server.script({"content": "too late", "delay": 4})
    cfg = _settings(server, timeout=1.0, circuit=2.0, fallback=_settings(backup, name="backup"))
    process_a, process_b = (provider_for(cfg, breakers=Breakers(shared_redis)) for _ in range(2))

    started = time.monotonic()
    assert process_a.chat(USER).entry == "backup"
    assert time.monotonic() - started < 1.0 + 10  # the fallback answers right after the primary's deadline
    asked = len(chats(server))
    for llm in (process_a, process_b) * 10:  # the next 20 calls skip the primary, in both processes
        assert llm.chat(USER).entry == "backup"
    assert len(chats(server)) == asked

    time.sleep(2.2)  # the circuit's time is up: one call tries the primary, which answers again
    assert process_b.chat(USER).entry == "primary"
    assert process_a.chat(USER).entry == "primary"
    assert len(chats(server)) == asked + 2


def test_without_a_fallback_an_open_circuit_fails_fast_and_says_when_to_retry(server):
    server.script({"status": 500}, {"status": 500}, {"status": 500})
    llm = provider_for(_settings(server, timeout=5, circuit=20), breakers=Breakers())
    with pytest.raises(LLMError) as first:
        llm.chat(USER)
    assert first.value.outage
    started = time.monotonic()
    with pytest.raises(CircuitOpen) as skipped:
        llm.chat(USER)
    assert time.monotonic() - started < 0.5 and 15 < skipped.value.retry_after <= 20
    assert len(chats(server)) == 3  # the first call's attempts; the second never reached the server


def test_client_errors_do_not_open_the_circuit(server):
    server.script({"status": 400}, {"content": "ok"})
    llm = provider_for(_settings(server), breakers=Breakers())
    with pytest.raises(LLMError):
        llm.chat(USER)
    assert llm.chat(USER).content == "ok"


# ---------------------------------------------------------------- through the bot's own processes

EPSILON = "447000000009"


def _tenants_yaml(pg_url: str, server, backup) -> str:
    fallback = f', fallback: {{provider: openai, name: backup, base_url: "{backup.url}", api_key: sk-b}}' \
        if backup is not None else ""
    return f"""
tenants:
  - tenant_id: epsilon
    waba_number: "+{EPSILON}"
    db_dsn: "{fresh_dsn(pg_url, 'epsilon')}"
    embedding_model: local-hash
    llm: {{provider: openai, name: main, base_url: "{server.url}", api_key: sk-a, timeout: 3, max_retries: 0,
           turn_seconds: 20, circuit_seconds: 60{fallback}}}
    config: {{business_name: Epsilon, timezone: UTC, debounce_ms: 100}}
"""


@pytest.fixture
def epsilon(tmp_path, pg_url, stack_env, request):
    """Start the bot (web + worker, Redis of its own) for one tenant whose LLM servers the test passes in."""
    started = []

    def start(server, backup=None):
        tenants_file = tmp_path / "tenants.yaml"
        tenants_file.write_text(_tenants_yaml(pg_url, server, backup))
        redis_server = start_redis(tmp_path / "redis")
        started.append(redis_server)
        env = {**stack_env, "TENANTS_FILE": str(tenants_file), "REDIS_URL": redis_server.url}
        for tenant in load_tenants(load_settings(env, dotenv=False), env=env):
            migrate_tenant(tenant)
        started.append(start_worker(env, tmp_path / "worker.log", name="epsilon"))
        web, url = start_web({**env, "WEB_CONCURRENCY": "1"}, tmp_path / "web.log", free_port())
        started.append(web)
        return url, load_tenants(load_settings(env, dotenv=False), env=env).require("epsilon")

    yield start
    for thing in reversed(started):
        thing.stop()


def post(url: str, user: str, text: str) -> None:
    r = requests.post(f"{url}/webhooks/infobip", headers=AUTH,
                      json=inbound(EPSILON, user, {"type": "TEXT", "text": text}), timeout=10)
    assert r.status_code == 200, r.text


def texts_to(sandbox, user: str) -> list[str]:
    return [r["json"]["content"]["text"] for r in sandbox.requests(path="/whatsapp/1/message/text")
            if r["json"]["to"] == user]


def usage_entries(tenant) -> list[str]:
    with psycopg.connect(tenant.db_dsn, row_factory=dict_row) as conn:
        return [r["provider_entry"] for r in conn.execute("SELECT provider_entry FROM llm_usage ORDER BY id")]


def test_a_hung_primary_with_a_fallback_answers_from_the_fallback_and_is_skipped(epsilon, server, backup, sandbox):
    server.script(*[{"content": "too late", "delay": 30}] * 5)
    url, tenant = epsilon(server, backup)
    first = new_user()
    sent_at = time.monotonic()
    post(url, first, "hello, can you tell me something nice")
    wait_for(lambda: texts_to(sandbox, first), 3 + 10, what="the fallback's answer")
    elapsed = time.monotonic() - sent_at
    print(f"hung primary, fallback configured: first answer after {elapsed:.1f} s")
    assert elapsed < 3 + 10  # within 10 s of the primary's 3 s deadline
    asked = len(chats(server))
    users = [new_user() for _ in range(20)]
    for user in users:
        post(url, user, "hello again, another nice thing please")
    wait_for(lambda: all(texts_to(sandbox, u) for u in users), 60, what="20 answers")
    assert len(chats(server)) == asked, "the 20 turns after the outage skipped the primary"
    entries = usage_entries(tenant)
    assert entries and set(entries) == {"backup"}


def test_a_hung_primary_without_a_fallback_gets_the_user_the_apology(epsilon, server, sandbox):
    server.script(*[{"content": "too late", "delay": 30}] * 10)
    url, _tenant = epsilon(server)
    user = new_user()
    sent_at = time.monotonic()
    post(url, user, "hello, can you tell me something nice")
    answer = wait_for(lambda: texts_to(sandbox, user), 120, what="the apology")
    elapsed = time.monotonic() - sent_at
    print(f"hung primary, no fallback: apology after {elapsed:.1f} s")
    assert "went wrong" in answer[0]
    assert elapsed < 120
    assert len(chats(server)) <= 3, "no stacked retries against a server that hangs"


def test_a_tool_that_acted_is_reported_when_the_model_then_answers_nothing(epsilon, server, sandbox):
    url, tenant = epsilon(server)
    user = new_user()
    server.script({"tool_calls": [{"name": "upsert_item", "arguments": {
                      "kind": "note", "title": "Locker code", "content": "Locker code is 4512"}}]},
                  {"content": ""}, {"content": ""})
    post(url, user, "please save a note: my locker code is 4512")
    answer = wait_for(lambda: texts_to(sandbox, user), 30, what="the reply")[0]
    assert answer.startswith("Done: ") and "saved" in answer.lower()
    with psycopg.connect(tenant.db_dsn, row_factory=dict_row) as conn:
        saved = conn.execute("SELECT count(*) AS n FROM memory_chunks WHERE content LIKE '%%4512%%'").fetchone()
    assert saved["n"] == 1


# ---------------------------------------------------------------- configuration and the turn's ceiling

def _llm_block(block: dict, env: dict | None = None):
    settings = load_settings(OFFLINE_ENV, dotenv=False)
    doc = {"tenant_id": "y", "waba_number": "+447000000080", "embedding_model": "local-hash", "llm": block}
    return parse_tenants({"tenants": [doc]}, settings, env or {}).require("y").llm


def test_the_llm_block_takes_the_new_settings_and_names_each_bad_one():
    cfg = _llm_block({"provider": "llamacpp", "base_url": "http://127.0.0.1:8080/v1", "max_tokens": 64,
                      "turn_seconds": 45, "circuit_seconds": 0, "timeout": 10,
                      "fallback": {"provider": "ollama", "name": "laptop", "tool_schema": "full"}})
    assert (cfg.provider, cfg.name, cfg.max_tokens, cfg.turn_seconds, cfg.circuit_seconds, cfg.timeout) == \
        ("llamacpp", "primary", 64, 45, 0, 10)
    assert (cfg.fallback.name, cfg.fallback.tool_schema, cfg.fallback.timeout) == ("laptop", "full", 10)
    assert _llm_block({"provider": "ollama"}).model_chat == "llama3.1"
    for block, message in [({"provider": "vllm"}, "llm.model_chat is not set: provider vllm"),
                           ({"provider": "llamacpp", "max_tokens": 0}, "llm.max_tokens must be a whole number"),
                           ({"provider": "llamacpp", "tool_schema": "tiny"}, "llm.tool_schema must be one of"),
                           ({"provider": "llamacpp", "timeout": 0}, "llm.timeout must be a number"),
                           ({"provider": "llamacpp", "fallback": {"provider": "mock", "turn_seconds": 5}},
                            r"llm.fallback: unknown field\(s\) turn_seconds")]:
        with pytest.raises(Exception, match=message):
            _llm_block(block)


def test_a_turn_waits_for_the_circuit_but_not_past_its_ceiling():
    outage = LLMError("down", outage=True)
    skipped = CircuitOpen("skipped", retry_after=28.0)
    assert 0 <= llm_retry_in(outage, 0, failing_since=1000.0, ceiling=120, now=1030.0) <= 2
    assert llm_retry_in(skipped, 1, failing_since=1000.0, ceiling=120, now=1032.0) >= 28
    assert llm_retry_in(skipped, 2, failing_since=1000.0, ceiling=120, now=1095.0) is None  # 1123 > 1120
