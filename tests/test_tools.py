"""Tools: the registry's checks and isolation, the reminder tools on tenant alpha's real database, and per-tenant
HTTP tools against a local fake API (network guards, caps, time-outs, secret handling, config errors)."""
from __future__ import annotations

import dataclasses
import json
import logging
import re
from datetime import datetime, timezone

import psycopg
import pytest
from jsonschema import Draft202012Validator
from psycopg.rows import dict_row

from fake_http_api import FakeHttpApi
import factories
from shared.errors import ConfigError
from shared.tools.base import Tool, ToolContext, ToolError
from shared.config.http_tools import parse_http_tool_specs
from shared.tools.http import parse_http_tools
from shared.tools.registry import ToolRegistry, build_registry

NOW = datetime(2026, 7, 1, 10, 0, tzinfo=timezone.utc)     # 11:00 in Europe/London (alpha's timezone, BST)
SECRET = "wx-secret-key-4711"


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def other_api():
    api = FakeHttpApi().start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def api(other_api):
    api = FakeHttpApi(redirect_target=f"{other_api.url}/v1/current?city=Elsewhere").start()
    yield api
    api.stop()


@pytest.fixture
def conn(tenants):
    """A connection to alpha's database in one transaction that the test's end rolls back."""
    with psycopg.connect(tenants.require("alpha").db_dsn, row_factory=dict_row) as c:
        yield c
        c.rollback()


@pytest.fixture
def ctx(tenants, conn) -> ToolContext:
    return ToolContext(tenant=tenants.require("alpha"), conn=conn, user_id=factories.user(conn)["id"], user_phone="",
                       memory=None, clock=lambda: NOW)


def weather_tool(api_url: str, **over) -> dict:
    doc = {"name": "get_weather", "description": "Current weather for a city", "method": "GET",
           "url": f"{api_url}/v1/current?city={{city}}",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "headers": {"X-Api-Key": SECRET}, "timeout_seconds": 5, "allow_private_network": True}
    doc.update(over)
    return doc


def with_http_tools(tenant, *docs):
    return dataclasses.replace(tenant, http_tools=parse_http_tool_specs(list(docs), tenant.tenant_id))


def call(registry: ToolRegistry, ctx: ToolContext, name: str, args) -> tuple[bool, dict]:
    result = registry.call(ctx, name, args if isinstance(args, str) else json.dumps(args))
    return result.is_error, json.loads(result.content)


def pending(conn, user_id: int) -> list[dict]:
    return conn.execute("SELECT id, text, due_at, status FROM reminders WHERE user_id = %s AND status = 'pending' "
                        "ORDER BY id", (user_id,)).fetchall()


@pytest.fixture
def registry(tenants) -> ToolRegistry:
    return build_registry(tenants.require("alpha"))


# ---------------------------------------------------------------- reminders

def test_reminder_times_are_read_and_shown_in_the_tenant_timezone(registry, ctx, conn):
    failed, out = call(registry, ctx, "set_reminder", {"text": "call the dentist", "due_at": "2026-07-01T15:00"})
    assert not failed, out
    assert out["due_at"] == "2026-07-01T15:00+01:00" and out["timezone"] == "Europe/London"
    [row] = pending(conn, ctx.user_id)
    assert row["due_at"] == datetime(2026, 7, 1, 14, 0, tzinfo=timezone.utc)   # 15:00 London = 14:00 UTC

    failed, out = call(registry, ctx, "set_reminder", {"text": "pay rent", "due_at": "2026-07-02T09:00:00Z"})
    assert not failed and out["due_at"] == "2026-07-02T10:00+01:00"

    failed, listed = call(registry, ctx, "list_reminders", {})
    assert not failed
    assert [(r["text"], r["due_at"]) for r in listed["reminders"]] == [
        ("call the dentist", "2026-07-01T15:00+01:00"), ("pay rent", "2026-07-02T10:00+01:00")]


def test_past_time_is_an_error_the_model_can_fix(registry, ctx, conn):
    failed, out = call(registry, ctx, "set_reminder", {"text": "too late", "due_at": "2026-07-01T10:30"})
    assert failed and out["isError"] is True
    assert "past" in out["error"] and "2026-07-01T11:00+01:00" in out["error"]   # tells the model what "now" is
    assert pending(conn, ctx.user_id) == []


@pytest.mark.parametrize("raw, kind", [
    ("not json at all", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    ({"text": "no time given"}, "invalid_arguments"),
    ({"text": "x", "due_at": "2026-07-02T10:00", "user_id": 1}, "invalid_arguments"),
    ({"text": 42, "due_at": "2026-07-02T10:00"}, "invalid_arguments"),
    ({"text": "   ", "due_at": "2026-07-02T10:00"}, "tool_error"),
    ({"text": "x", "due_at": "tomorrow at noon"}, "tool_error"),
    ({"text": "x", "due_at": "2026-07-02"}, "tool_error"),
    ({"text": "x", "due_at": "2027-03-28T01:30"}, "tool_error"),   # skipped by the clock change in London
])
def test_bad_arguments_come_back_as_errors_and_change_nothing(registry, ctx, conn, raw, kind):
    result = registry.call(ctx, "set_reminder", raw if isinstance(raw, str) else json.dumps(raw))
    assert result.is_error and result.error_kind == kind
    assert json.loads(result.content)["error"]
    assert pending(conn, ctx.user_id) == []


def test_unknown_tool_is_an_error_naming_the_available_ones(registry, ctx):
    failed, out = call(registry, ctx, "launch_rockets", {})
    assert failed and "set_reminder" in out["error"]


def test_cancel_only_reaches_the_users_own_pending_reminder(registry, ctx, conn):
    other = dataclasses.replace(ctx, user_id=factories.user(conn)["id"])
    _, theirs = call(registry, other, "set_reminder", {"text": "theirs", "due_at": "2026-07-03T09:00"})
    _, mine = call(registry, ctx, "set_reminder", {"text": "mine", "due_at": "2026-07-03T09:00"})

    for foreign_id in (theirs["id"], 987654321):
        failed, out = call(registry, ctx, "cancel_reminder", {"id": foreign_id})
        assert failed and "no such reminder" in out["error"]
    assert [r["text"] for r in pending(conn, other.user_id)] == ["theirs"]
    _, listed = call(registry, ctx, "list_reminders", {})
    assert [r["text"] for r in listed["reminders"]] == ["mine"]   # the other user's reminder is not listed

    failed, out = call(registry, ctx, "cancel_reminder", {"id": mine["id"]})
    assert not failed and out["status"] == "cancelled"
    assert pending(conn, ctx.user_id) == []
    failed, _ = call(registry, ctx, "cancel_reminder", {"id": mine["id"]})   # already cancelled
    assert failed


# ---------------------------------------------------------------- registry

class _Boom(Tool):
    """Writes a reminder, then fails: its write must be undone and the caller's transaction stay usable."""

    name, description = "boom", "fails after writing"

    def __init__(self, failure: Exception | None):
        self.failure = failure

    def invoke(self, ctx, args):
        factories.reminder(ctx.conn, ctx.user_id, text="half-done")
        if self.failure is not None:
            raise self.failure
        ctx.conn.execute("SELECT 1 / 0")


@pytest.mark.parametrize("failure", [None, ToolError("cannot do that")], ids=["sql-error", "tool-error"])
def test_a_failing_tool_rolls_back_only_its_own_writes(ctx, conn, failure):
    from shared.tools.reminders import REMINDER_TOOLS

    registry = ToolRegistry([*REMINDER_TOOLS, _Boom(failure)])
    assert not registry.call(ctx, "set_reminder", '{"text": "keep me", "due_at": "2026-07-05T08:00"}').is_error
    result = registry.call(ctx, "boom", "{}")
    assert result.is_error
    if failure is None:
        assert result.error_kind == "exception" and "division" not in result.content   # no internals leak
    else:
        assert json.loads(result.content)["error"] == "cannot do that"
    failed, listed = call(registry, ctx, "list_reminders", {})   # the transaction still works
    assert not failed and [r["text"] for r in listed["reminders"]] == ["keep me"]


def test_each_call_is_logged_with_duration_and_outcome_but_not_arguments(registry, ctx, caplog):
    with caplog.at_level(logging.INFO, logger="shared.tools.registry"):
        registry.call(ctx, "set_reminder", json.dumps({"text": "pin 8812-secret", "due_at": "2026-07-09T10:00"}))
        registry.call(ctx, "set_reminder", json.dumps({"text": "pin 8812-secret", "due_at": "yesterday"}))
    records = [r for r in caplog.records if getattr(r, "tool", None) == "set_reminder"]
    assert [r.outcome for r in records] == ["ok", "error"]
    assert all(isinstance(r.duration_ms, int) for r in records)
    assert "8812-secret" not in caplog.text and all("8812-secret" not in str(r.__dict__) for r in records)


def test_schemas_are_valid_openai_tool_specs_and_groups_gate_them(tenants, api):
    tenant = with_http_tools(tenants.require("alpha"), weather_tool(api.url))
    registry = build_registry(tenant)
    assert build_registry(tenant) is registry                       # cached per tenant
    assert registry.names(group="http") == ["get_weather"]
    assert {"set_reminder", "list_reminders", "cancel_reminder"} <= set(registry.names(group="db"))
    assert "get_weather" not in registry.names(group="db")
    for spec in registry.openai_schemas():
        assert spec["type"] == "function"
        fn = spec["function"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", fn["name"]) and fn["description"].strip()
        assert fn["parameters"]["type"] == "object"
        Draft202012Validator.check_schema(fn["parameters"])
    picked = registry.openai_schemas(["cancel_reminder", "get_weather", "set_reminder"])
    assert [s["function"]["name"] for s in picked] == [n for n in registry.names()
                                                         if n in ("cancel_reminder", "get_weather", "set_reminder")]
    with pytest.raises(KeyError, match="nope"):
        registry.openai_schemas(["nope"])
    with pytest.raises(RuntimeError):
        registry.register(_Boom(None))
    assert registry.get("list_reminders").annotations.readOnlyHint
    assert registry.get("cancel_reminder").annotations.destructiveHint


def test_registration_rejects_a_schema_that_is_not_an_object():
    class ArrayTool(Tool):
        name, description, input_schema = "bad", "bad schema", {"type": "array"}

    with pytest.raises(ValueError, match="type"):
        ToolRegistry([ArrayTool()])


# ---------------------------------------------------------------- HTTP tools

def http_registry(tenants, *docs) -> ToolRegistry:
    return build_registry(with_http_tools(tenants.require("alpha"), *docs))


def test_http_tool_calls_the_api_with_its_header_and_encoded_arguments(tenants, ctx, api):
    registry = http_registry(tenants, weather_tool(api.url))
    city = "São Paulo & Co/../admin?x=1#top"                  # '&', '#', '/' and '?' must not change the URL
    failed, out = call(registry, ctx, "get_weather", {"city": city})
    assert not failed, out
    assert out == {"city": city, "temperature_c": 22, "conditions": "partly cloudy"}
    seen = [r for r in api.requests_seen("/v1/current") if r["query"].get("city") == [city]]
    assert len(seen) == 1 and seen[0]["headers"]["X-Api-Key"] == SECRET
    assert list(seen[0]["query"]) == ["city"]                   # the value did not add query parameters


def test_http_tool_never_returns_its_header_values(tenants, ctx, api):
    registry = http_registry(tenants, weather_tool(api.url, name="echo", url=f"{api.url}/v1/echo-headers",
                                                   parameters={"type": "object", "properties": {}}))
    result = registry.call(ctx, "echo", "{}")
    assert not result.is_error and SECRET not in result.content
    assert json.loads(result.content)["headers"]["X-Api-Key"] == "[redacted]"


def test_http_post_sends_the_other_arguments_as_json(tenants, ctx, api):
    registry = http_registry(tenants, weather_tool(
        api.url, name="book", method="POST", url=f"{api.url}/v1/bookings",
        parameters={"type": "object", "properties": {"day": {"type": "string"}, "people": {"type": "integer"}},
                    "required": ["day"]}))
    failed, out = call(registry, ctx, "book", {"day": "2026-07-04", "people": 3})
    assert not failed and out == {"received": {"day": "2026-07-04", "people": 3}}


def test_plain_text_answers_come_back_as_text(tenants, ctx, api):
    registry = http_registry(tenants, weather_tool(api.url, name="page", url=f"{api.url}/v1/page",
                                                   parameters={"type": "object", "properties": {}}))
    failed, out = call(registry, ctx, "page", {})
    assert not failed and out == {"text": "hello from a plain page", "truncated": False}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_private_addresses_are_refused_without_the_flag(tenants, ctx, api, host):
    registry = http_registry(tenants, weather_tool(f"http://{host}:{api.port}", allow_private_network=False))
    city = f"Refused-{host}"
    failed, out = call(registry, ctx, "get_weather", {"city": city})
    assert failed and "private" in out["error"]
    assert [r for r in api.requests_seen("/v1/current") if r["query"].get("city") == [city]] == []
    assert SECRET not in json.dumps(out)


def test_redirects_stay_on_the_declared_host(tenants, ctx, api, other_api):
    def tool(name, path):
        return weather_tool(api.url, name=name, url=f"{api.url}{path}", parameters={"type": "object",
                            "properties": {"city": {"type": "string"}}})

    registry = http_registry(tenants, tool("away", "/v1/away"), tool("moved", "/v1/moved"), tool("loop", "/v1/loop"))
    failed, out = call(registry, ctx, "away", {})
    assert failed and "another host" in out["error"]
    assert other_api.requests_seen() == []

    failed, out = call(registry, ctx, "moved", {"city": "Leeds"})   # same host: followed
    assert not failed and out["city"] == "Leeds"

    failed, out = call(registry, ctx, "loop", {})
    assert failed and "redirected more than 3 times" in out["error"]


def test_response_size_is_capped(tenants, ctx, api):
    registry = http_registry(tenants, weather_tool(api.url, name="huge", url=f"{api.url}/v1/huge",
                                                   parameters={"type": "object", "properties": {}},
                                                   max_response_bytes=100_000))
    failed, out = call(registry, ctx, "huge", {})
    assert failed and "larger than the limit of 100000 bytes" in out["error"]


def test_a_slow_api_times_out(tenants, ctx, api):
    registry = http_registry(tenants, weather_tool(api.url, name="slow", url=f"{api.url}/v1/slow?seconds=3",
                                                   parameters={"type": "object", "properties": {}},
                                                   timeout_seconds=0.3))
    failed, out = call(registry, ctx, "slow", {})
    assert failed and "did not answer in time" in out["error"]


def test_an_error_status_is_reported_with_its_code(tenants, ctx, api):
    registry = http_registry(tenants, weather_tool(api.url, name="broken", url=f"{api.url}/v1/broken",
                                                   parameters={"type": "object", "properties": {}}))
    failed, out = call(registry, ctx, "broken", {})
    assert failed and "HTTP 500" in out["error"] and "database on fire" in out["error"]


@pytest.mark.parametrize("over, message", [
    ({"name": "get weather!"}, r"http_tools\[0\]\.name"),
    ({"method": "FETCH"}, "http tool get_weather: method"),
    ({"url": "ftp://files.example/{city}"}, "http tool get_weather: url must start with http"),
    ({"url": "https://{city}.example/v1"}, "http tool get_weather: url may not have placeholders in the host"),
    ({"url": "https://api.example/v1/{town}"}, r"http tool get_weather: url placeholder \{town\}"),
    ({"parameters": {"type": "array"}}, "http tool get_weather: parameters must be a JSON schema with type: object"),
    ({"timeout_seconds": 0}, "http tool get_weather: timeout_seconds"),
    ({"verify": False}, "http tool get_weather: unknown field"),
    ({"headers": {"X-Api-Key": SECRET + "\nX-Evil: 1"}}, "http tool get_weather: headers.X-Api-Key"),
])
def test_config_errors_name_tenant_tool_and_field(tenants, over, message):
    with pytest.raises(ConfigError, match=f"tenant alpha.*{message}") as caught:
        with_http_tools(tenants.require("alpha"), weather_tool("https://api.example", **over))
    assert SECRET not in str(caught.value)


def test_duplicate_and_builtin_names_are_config_errors(tenants):
    with pytest.raises(ConfigError, match="tenant alpha http tool get_weather: name is used twice"):
        with_http_tools(tenants.require("alpha"), weather_tool("https://a.example"), weather_tool("https://b.example"))
    clash = with_http_tools(tenants.require("alpha"), weather_tool("https://a.example", name="set_reminder"))
    with pytest.raises(ConfigError, match="tenant alpha http tool set_reminder: name is already used"):
        build_registry(clash)


# ---------------------------------------------------------------- URL placeholders, the caller binding, redaction

def customer_tool(api_url: str, **over) -> dict:
    return weather_tool(api_url, name="orders", url=f"{api_url}/v1/customers/{{cid}}/orders",
                        parameters={"type": "object", "properties": {"cid": {"type": "string"}},
                                    "required": ["cid"]}, **over)


@pytest.mark.parametrize("cid", ["..", "."])
def test_dot_segments_cannot_climb_out_of_the_declared_path(tenants, ctx, api, cid):
    registry = http_registry(tenants, customer_tool(api.url))
    before = len(api.requests_seen())
    failed, out = call(registry, ctx, "orders", {"cid": cid})
    assert failed and "'.' or '..'" in out["error"] and "cid" in out["error"]
    assert len(api.requests_seen()) == before, "nothing was sent"

    failed, _ = call(registry, ctx, "orders", {"cid": "..42"})    # only a whole '.' / '..' segment is refused
    assert failed   # the fake API has no such customer: HTTP 404, but the request stayed under /customers/
    assert api.requests_seen()[-1]["path"] == "/v1/customers/..42/orders"


def test_placeholders_that_together_make_a_dot_segment_are_refused(tenants, ctx, api):
    doc = weather_tool(api.url, name="pair", url=f"{api.url}/v1/customers/{{a}}{{b}}/orders",
                       parameters={"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                                   "required": ["a", "b"]})
    registry = http_registry(tenants, doc)
    before = len(api.requests_seen())
    failed, out = call(registry, ctx, "pair", {"a": ".", "b": "."})
    assert failed and "'.' or '..'" in out["error"]
    assert len(api.requests_seen()) == before


def test_user_phone_is_filled_by_the_server_and_never_by_the_model(tenants, ctx, api):
    doc = weather_tool(api.url, name="my_weather", url=f"{api.url}/v1/current?city={{user_phone}}",
                       parameters={"type": "object", "properties": {}})
    registry = http_registry(tenants, doc)
    schema = registry.get("my_weather").openai_schema()["function"]["parameters"]
    assert "user_phone" not in json.dumps(schema)

    mine = dataclasses.replace(ctx, user_phone="447700900123")
    failed, out = call(registry, mine, "my_weather", {})
    assert not failed and out["city"] == "447700900123"
    assert api.requests_seen("/v1/current")[-1]["query"] == {"city": ["447700900123"]}

    before = len(api.requests_seen())
    failed, out = call(registry, mine, "my_weather", {"user_phone": "15550009999"})   # the model tries another user
    assert failed and "'user_phone' was unexpected" in out["error"]   # the schema says additionalProperties: false
    failed, out = call(registry, ctx, "my_weather", {})                               # no caller known
    assert failed and "phone number is not known" in out["error"]
    assert len(api.requests_seen()) == before


def test_user_phone_is_reserved_in_the_config(tenants):
    declared = weather_tool("https://api.example", url="https://api.example/v1/{user_phone}",
                            parameters={"type": "object", "properties": {"user_phone": {"type": "string"}},
                                        "required": ["user_phone"]})
    with pytest.raises(ConfigError, match="tenant alpha http tool get_weather: parameters.properties may not "
                                          "declare user_phone"):
        parse_http_tools(with_http_tools(tenants.require("alpha"), declared))
    # Not in parameters, yet a valid placeholder; other placeholders still must be declared.
    ok = weather_tool("https://api.example", url="https://api.example/v1/customers/{user_phone}/orders?c={city}")
    assert [t.name for t in parse_http_tools(with_http_tools(tenants.require("alpha"), ok))] == ["get_weather"]
    dots = weather_tool("https://api.example", url="https://api.example/v1/../admin?city={city}")
    with pytest.raises(ConfigError, match="tenant alpha http tool get_weather: url may not have '.' or '..'"):
        parse_http_tools(with_http_tools(tenants.require("alpha"), dots))


def test_each_long_part_of_a_header_value_is_redacted(tenants, ctx, api):
    token = "tok-9f8e7d6c5b4a"
    doc = weather_tool(api.url, name="book", method="POST", url=f"{api.url}/v1/bookings",
                       headers={"Authorization": f"Bearer {token}"},
                       parameters={"type": "object", "properties": {"note": {"type": "string"}}})
    registry = http_registry(tenants, doc)
    # An API that quotes the token alone (here: it echoes what it got) must not hand it to the model.
    result = registry.call(ctx, "book", json.dumps({"note": f"key {token} is not valid (Bearer)"}))
    assert not result.is_error and token not in result.content
    assert json.loads(result.content) == {"received": {"note": "key [redacted] is not valid (Bearer)"}}
    assert api.requests_seen("/v1/bookings")[-1]["headers"]["Authorization"] == f"Bearer {token}"


# ---------------------------------------------------------------- the size of what reaches the model

class _Big(Tool):
    name, description = "big", "answers with a long list"

    def __init__(self, item: str, count: int):
        self.item, self.count = item, count

    def invoke(self, ctx, args):
        return {"items": [self.item] * self.count}


@pytest.mark.parametrize("item", ["plain text item", 'quoted "item" \\ with\nescapes \u00e9'])
def test_a_long_tool_result_is_cut_to_valid_json_that_says_so(ctx, item):
    from shared.tools.registry import MAX_RESULT_CHARS

    registry = ToolRegistry([_Big(item, 1000)])
    full = json.dumps({"items": [item] * 1000}, ensure_ascii=False)
    result = registry.call(ctx, "big", "{}")
    assert not result.is_error and len(full) > MAX_RESULT_CHARS
    assert len(result.content) <= MAX_RESULT_CHARS
    out = json.loads(result.content)
    assert out["truncated"] is True and out["original_chars"] == len(full)
    assert out["partial"] and full.startswith(out["partial"])
    assert result.data == {"items": [item] * 1000}          # the server keeps the whole result

    small = ToolRegistry([_Big(item, 3)]).call(ctx, "big", "{}")
    assert json.loads(small.content) == {"items": [item] * 3}   # short results are untouched


def test_a_long_http_answer_is_cut_before_it_reaches_the_model(tenants, ctx, api):
    from shared.tools.registry import MAX_RESULT_CHARS

    registry = http_registry(tenants, weather_tool(
        api.url, name="book", method="POST", url=f"{api.url}/v1/bookings",
        parameters={"type": "object", "properties": {"lines": {"type": "array", "items": {"type": "string"}}}}))
    result = registry.call(ctx, "book", json.dumps({"lines": ["a line of a long answer"] * 2000}))
    assert not result.is_error and len(result.content) <= MAX_RESULT_CHARS
    assert json.loads(result.content)["truncated"] is True


def test_a_long_error_is_cut_and_stays_an_error(ctx):
    from shared.tools.registry import MAX_RESULT_CHARS

    class Loud(Tool):
        name, description = "loud", "fails at length"

        def invoke(self, ctx, args):
            raise ToolError("no: " + "very long reason " * 500)

    result = ToolRegistry([Loud()]).call(ctx, "loud", "{}")
    out = json.loads(result.content)
    assert result.is_error and len(result.content) <= MAX_RESULT_CHARS
    assert out["isError"] is True and out["truncated"] is True and '"error": "no: very long' in out["partial"]
