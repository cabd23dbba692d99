"""What tokens really cost (issue 17): cached prompt tokens read from the provider's `usage` (OpenAI's
`prompt_tokens_details.cached_tokens`, DeepSeek's `prompt_cache_hit_tokens`, 0 when absent) and stored in
`llm_usage.cached_prompt_tokens`; per-model prices from tenants.yaml, validated with the key named; billed cost per
tenant in the admin API and the console (unknown, never 0, for a model without a price); a real turn of an OpenAI
tenant recording its cached tokens."""
from __future__ import annotations

import dataclasses
import json
import textwrap
import urllib.request
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from psycopg.rows import dict_row

import factories
from browser import add_operator
from fake_openai import FakeOpenAI
from helpers import AUTH, NUMBERS, inbound, new_user, wait_for

from ingress.admin_api.tokens import hash_token, new_token
from shared.config.prices import ModelPrice, bill, bills_by_day, price_for
from shared.config.tenant_schema import TenantFileError
from shared.config.tenants import TenantRegistry, parse_tenants
from shared.config.yaml_lines import load_with_lines
from shared.db import operators
from shared.db.usage import record_usage
from shared.llm.failover import FailoverProvider
from shared.llm.openai_compat import OpenAICompatProvider

KEY = "sk-test-cache-0001"
MINI = ModelPrice(Decimal("0.15"), Decimal("0.075"), Decimal("0.60"))


@pytest.fixture(scope="module")
def server():
    fake = FakeOpenAI(api_keys={KEY}).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(server):
    server.reset()
    return server


def _provider(fake: FakeOpenAI, name: str = "openai") -> OpenAICompatProvider:
    return OpenAICompatProvider(name=name, model="gpt-4o-mini", api_key=KEY, base_url=fake.url, max_retries=0)


# ------------------------------------------------------------------ the provider reads cached tokens

def test_openai_cached_tokens_are_read(fake):
    fake.script({"content": "hello", "prompt_tokens": 2048, "cached_tokens": 1792})
    usage = _provider(fake).chat([{"role": "user", "content": "hi"}]).usage
    assert (usage.prompt_tokens, usage.cached_prompt_tokens) == (2048, 1792)


def test_deepseek_cache_hits_are_read(fake):
    fake.script({"content": "你好", "prompt_tokens": 1500, "cached_tokens": 1280, "cache_style": "deepseek"})
    usage = _provider(fake, "deepseek").chat([{"role": "user", "content": "hi"}]).usage
    assert (usage.prompt_tokens, usage.cached_prompt_tokens) == (1500, 1280)


def test_without_cache_fields_cached_is_zero_and_the_fake_answers_as_before(fake):
    fake.script({"content": "scripted"})
    assert _provider(fake).chat([{"role": "user", "content": "hi"}]).usage.cached_prompt_tokens == 0
    assert _provider(fake).chat([{"role": "user", "content": "hello"}]).usage.cached_prompt_tokens == 0  # mock brain
    assert all("prompt_tokens_details" not in r for r in _usages(fake))


def _usages(fake: FakeOpenAI) -> list[dict]:
    """The `usage` of an unscripted answer, read off the wire."""
    request = urllib.request.Request(fake.url + "/chat/completions", method="POST",
                                     data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]})
                                     .encode(), headers={"Authorization": f"Bearer {KEY}",
                                                         "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return [json.load(resp)["usage"]]


def test_an_empty_answer_asked_again_counts_both_calls_cached_tokens(fake):
    fake.script({"content": "", "prompt_tokens": 300, "cached_tokens": 256},
                {"content": "now in words", "prompt_tokens": 320, "cached_tokens": 256})
    result = _provider(fake).chat([{"role": "user", "content": "hi"}])
    assert result.content == "now in words"
    assert (result.usage.prompt_tokens, result.usage.cached_prompt_tokens) == (620, 512)


def test_the_fallbacks_cached_tokens_are_kept(fake):
    fake.script({"status": 500}, {"content": "from the fallback", "prompt_tokens": 1100, "cached_tokens": 1024})
    result = FailoverProvider(_provider(fake), _provider(fake, "deepseek")).chat([{"role": "user", "content": "hi"}])
    assert result.provider == "deepseek" and result.usage.cached_prompt_tokens == 1024


# ------------------------------------------------------------------ prices in tenants.yaml

TENANT = """
  - tenant_id: {tid}
    waba_number: "+1555000{n:04d}"
    db_dsn: "postgresql://u@127.0.0.1/{tid}"
"""


def _parse(text: str, settings, stack_env) -> TenantRegistry:
    document, lines = load_with_lines(textwrap.dedent(text))
    return parse_tenants(document, settings, stack_env, lines)


def test_prices_apply_to_every_tenant_and_a_tenants_own_extend_them(settings, stack_env):
    registry = _parse("""
prices:
  gpt-4o-mini: {input: 0.15, cached_input: 0.075, output: 0.6}
  deepseek-chat: {input: 0.27, output: 1.1}
tenants:""" + TENANT.format(tid="p1", n=1) + """    llm:
      provider: mock
      prices: {gpt-4o-mini: {input: 1, output: 2}, mock-chat: {input: 0, output: 0}}
""" + TENANT.format(tid="p2", n=2), settings, stack_env)
    p1, p2 = registry.require("p1"), registry.require("p2")
    assert p2.prices["gpt-4o-mini"] == MINI
    assert p2.prices["deepseek-chat"].cached_input == Decimal("0.27")  # no cached price: the input price
    assert p1.prices["gpt-4o-mini"] == ModelPrice(Decimal(1), Decimal(1), Decimal(2))
    assert set(p1.prices) == {"gpt-4o-mini", "deepseek-chat", "mock-chat"} and "mock-chat" not in p2.prices
    assert p1.llm.provider == "mock"  # `prices` is taken out of the llm block before it is read


def test_wrong_prices_stop_start_up_naming_the_key_and_line(settings, stack_env):
    with pytest.raises(TenantFileError) as caught:
        _parse("""
prices:
  gpt-4o: {input: "cheap", output: 1}
  gpt-4o-mini: {input: 0.15}
  o3: {input: 2, output: 8, cache: 0.5}
  gpt-4.1: 3
tenants:""" + TENANT.format(tid="p1", n=1) + """    llm: {prices: {m1: {input: -1, output: 1}}}
""", settings, stack_env)
    lines = str(caught.value).splitlines()
    assert "line 3: prices.gpt-4o.input must be a number from 0 to 1,000,000 (price per 1M tokens)" in lines
    assert "line 4: prices.gpt-4o-mini.output is not set (price per 1M tokens)" in lines
    assert "line 5: prices.o3: unknown key(s) cache: a price has input, cached_input, output" in lines
    assert any(x.startswith("line 6: prices.gpt-4.1 must be a mapping") for x in lines)
    assert any(x.startswith("line 11: tenant p1: llm.prices.m1.input must be a number") for x in lines), lines


# ------------------------------------------------------------------ billed cost

def test_billed_cost_takes_cached_tokens_at_the_cached_price():
    row = {"model": "gpt-4o-mini", "prompt_tokens": 1_000_000, "cached_prompt_tokens": 400_000,
           "completion_tokens": 100_000}
    # 600k at 0.15 + 400k at 0.075 + 100k at 0.60 (per 1M)
    assert bill([row], {"gpt-4o-mini": MINI}).cost == Decimal("0.18")
    assert MINI.cost(1000, 5000, 0) == Decimal("0.000075")  # cached is never more than the prompt


def test_a_model_without_a_price_costs_unknown_not_zero():
    rows = [{"model": "gpt-4o-mini", "prompt_tokens": 10, "cached_prompt_tokens": 0, "completion_tokens": 5},
            {"model": "llama3.1", "prompt_tokens": 10, "cached_prompt_tokens": 0, "completion_tokens": 5},
            {"model": "whisper-1", "prompt_tokens": 0, "cached_prompt_tokens": 0, "completion_tokens": 0}]
    result = bill(rows, {"gpt-4o-mini": MINI})
    assert result.cost is None and result.unpriced == ("llama3.1",)
    assert result.as_json() == {"billed_cost": None, "cached_prompt_tokens": 0, "unpriced_models": ["llama3.1"]}
    assert bill(rows[::2], {"gpt-4o-mini": MINI}).as_json()["billed_cost"] == "0.0000045"  # tokenless calls: free


def test_a_snapshot_name_takes_its_models_price_and_no_other():
    prices = {"gpt-4o-mini": MINI, "gpt-4o": ModelPrice(Decimal("2.5"), Decimal("1.25"), Decimal(10))}
    assert price_for(prices, "gpt-4o-mini-2024-07-18") is MINI
    assert price_for(prices, "gpt-4o-2024-08-06") is prices["gpt-4o"]
    assert price_for({"gpt-4o": prices["gpt-4o"]}, "gpt-4o-mini") is None
    assert price_for({"gpt-4": MINI}, "gpt-4-0613") is MINI and price_for({"gpt-4": MINI}, "gpt-4-turbo") is None


def test_bills_by_day_keep_days_apart():
    d1, d2 = date(2026, 1, 1), date(2026, 1, 2)
    rows = [{"day": d1, "model": "gpt-4o-mini", "prompt_tokens": 10**6, "cached_prompt_tokens": 0,
             "completion_tokens": 0},
            {"day": d2, "model": "x", "prompt_tokens": 1, "cached_prompt_tokens": 1, "completion_tokens": 0}]
    bills = bills_by_day(rows, {"gpt-4o-mini": MINI})
    assert bills[d1].cost == Decimal("0.15") and bills[d2].cost is None and bills[d2].cached_prompt_tokens == 1


# ------------------------------------------------------------------ stored and reported

def test_record_usage_stores_cached_tokens_never_more_than_the_prompt(db):
    with db("beta") as conn:
        conn.row_factory = dict_row
        request = f"cost-{uuid.uuid4().hex[:8]}"
        for prompt, cached in ((100, 64), (10, 50)):
            record_usage(conn, user_id=None, request_id=request, provider="openai", model="gpt-4o-mini",
                         prompt_tokens=prompt, completion_tokens=1, latency_ms=1, tools_used=[],
                         cached_prompt_tokens=cached)
        record_usage(conn, user_id=None, request_id=request, provider="mock", model="mock-chat", prompt_tokens=5,
                     completion_tokens=1, latency_ms=1, tools_used=[])
        rows = conn.execute("SELECT cached_prompt_tokens FROM llm_usage WHERE request_id = %s ORDER BY id",
                            (request,)).fetchall()
        conn.execute("DELETE FROM llm_usage WHERE request_id = %s", (request,))
    assert [r["cached_prompt_tokens"] for r in rows] == [64, 10, 0]


@pytest.fixture
def priced(tenants):
    """The tenants, beta with prices for gpt-4o-mini and mock-chat (what the tests' other rows use)."""
    beta = dataclasses.replace(tenants.require("beta"),
                               prices={"gpt-4o-mini": MINI, "mock-chat": ModelPrice(Decimal(0), Decimal(0),
                                                                                    Decimal(0))})
    return TenantRegistry([beta if t.tenant_id == "beta" else t for t in tenants])


@pytest.fixture
def old_rows(db, tenants):
    """beta: gpt-4o-mini calls 20 days ago and a call of an unpriced model 21 days ago (tenant-local noon)."""
    tenant = tenants.require("beta")
    today = datetime.now(timezone.utc).astimezone(tenant.config.tz).date()
    days = today - timedelta(days=20), today - timedelta(days=21)
    at = [datetime.combine(d, time(12), tzinfo=tenant.config.tz) for d in days]
    with db("beta") as conn:
        conn.row_factory = dict_row
        rows = [factories.usage(conn, provider="openai", model="gpt-4o-mini-2024-07-18", prompt_tokens=600_000,
                                completion_tokens=50_000, cached_prompt_tokens=200_000, created_at=at[0]),
                factories.usage(conn, provider="openai", model="gpt-4o-mini", prompt_tokens=400_000,
                                completion_tokens=50_000, cached_prompt_tokens=200_000, created_at=at[0]),
                factories.usage(conn, provider="ollama", model="llama3.1", prompt_tokens=10, completion_tokens=5,
                                created_at=at[1])]
    yield days
    with db("beta") as conn:
        conn.execute("DELETE FROM llm_usage WHERE id = ANY(%s)", ([r["id"] for r in rows],))


def test_admin_api_reports_cached_tokens_and_billed_cost(settings, priced, db, old_rows):
    from ingress.app import create_app

    token = new_token()
    with db("beta") as conn:
        conn.row_factory = dict_row
        operators.create(conn, f"op-{uuid.uuid4().hex[:8]}", hash_token(token))
    client = create_app(settings, priced, configure_logs=False).test_client()
    day, unpriced_day = old_rows
    resp = client.get(f"/api/v1/tenants/beta/usage?from={unpriced_day}&to={day}",
                      headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.get_json()
    by_day = {d["day"]: d for d in resp.get_json()["days"]}
    # 600k at 0.15 + 400k cached at 0.075 + 100k at 0.60 = 0.09 + 0.03 + 0.06
    assert by_day[day.isoformat()]["cached_prompt_tokens"] == 400_000
    assert Decimal(by_day[day.isoformat()]["billed_cost"]) == Decimal("0.18")
    assert by_day[unpriced_day.isoformat()]["billed_cost"] is None
    assert by_day[unpriced_day.isoformat()]["unpriced_models"] == ["llama3.1"]


def test_console_usage_shows_cached_tokens_and_billed_cost(settings, priced, stack_env, old_rows):
    from ingress.app import create_app

    name, password = add_operator(stack_env, "beta")
    client = create_app(settings, priced, configure_logs=False).test_client()
    https = {"base_url": "https://localhost"}
    login = client.post("/console/login", data={"tenant": "beta", "name": name, "password": password}, **https)
    assert login.status_code == 302, login.get_data(as_text=True)[:300]
    numbers = client.get("/console/t/beta/usage.json", **https).get_json()
    day = {d["day"]: d for d in numbers["days"]}[old_rows[0].isoformat()]
    assert day["cached_prompt_tokens"] == 400_000 and Decimal(day["billed_cost"]) == Decimal("0.18")
    assert numbers["period"]["billed_cost"] is None and "llama3.1" in numbers["period"]["unpriced_models"]
    page = client.get("/console/t/beta/usage", **https).get_data(as_text=True)
    assert "<th>p99 ms</th><th>Cached</th><th>Cost</th>" in page and '<td class="cost">0.1800</td>' in page
    assert "no price for" in page and "llama3.1" in page


# ------------------------------------------------------------------ a real turn records its cached tokens

def test_a_turn_of_an_openai_tenant_records_cached_tokens(client, worker, sandbox, db, fake_openai):
    fake_openai.reset()
    fake_openai.script({"content": "Hello from a warm cache!", "prompt_tokens": 1300, "cached_tokens": 1152})
    user = new_user()
    body = inbound(NUMBERS["gamma"], user, {"type": "TEXT", "text": "hi"})
    assert client.post("/webhooks/infobip", json=body, headers=AUTH).status_code == 200
    wait_for(lambda: [r for r in sandbox.requests(path="/whatsapp/1/message/text") if r["json"]["to"] == user],
             timeout=30, what="the reply")
    with db("gamma") as conn:
        rows = wait_for(lambda: conn.execute(
            "SELECT l.prompt_tokens, l.cached_prompt_tokens FROM llm_usage l JOIN users u ON u.id = l.user_id "
            "WHERE u.phone = %s", (user,)).fetchall(), what="the usage row")
    assert [(r["prompt_tokens"], r["cached_prompt_tokens"]) for r in rows] == [(1300, 1152)]
