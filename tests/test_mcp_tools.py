"""MCP servers as tenant tools (issue 15), against servers nobody here wrote and one of ours:
- the reference `mcp-server-time` from PyPI, started over stdio from the tenant's `mcp_servers:`;
- our shop server (tests/mcp_servers.py, the SDK's MCPServer, formerly FastMCP) over Streamable HTTP, stopped and
  restarted mid-run;
each driven by the scripted fake model (tests/fake_openai.py) through the real engine, tool registry and database."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import fresh_dsn
from helpers import wait_for
from mcp_servers import quiet_model, shop  # noqa: F401 (fixtures)
from mcp_servers import (Bot, Clock, HttpMcpServer, answer_with_tool_result, calls, chat_requests, make_tenant, offered,
                         says, tenant_doc, tool_results)
from shared.config.tenants import TenantFileError, TenantRegistry, parse_tenants
from shared.tools.mcp.hub import McpHub, hub, refuse_private_address
from shared.tools.mcp.spec import McpServerSpec
from workers.runtime import Runtime

TIME_SERVER = str(Path(sys.executable).parent / "mcp-server-time")
SHOP_SCRIPT = str(Path(__file__).resolve().parent / "mcp_servers.py")


@pytest.fixture(scope="module")
def bot(settings, pg_url, fake_openai, shop):
    servers = [{"name": "time", "command": TIME_SERVER, "args": ["--local-timezone", "UTC"]},
               {"name": "shop", "url": shop.url, "allow_private_network": True, "ping_seconds": 0.3,
                "timeout_seconds": 5, "user_argument": "customer_phone", "max_result_chars": 500,
                "deny_tools": ["slow_report"]}]
    tenant = make_tenant(settings, tenant_doc("mcp_tools", fresh_dsn(pg_url, "mcp"), fake_openai.url, servers))
    bot = Bot(tenant, Clock())
    bot.registry.start(wait_seconds=20)
    wait_for(lambda: {"time__get_current_time", "shop__lookup_order"} <= set(bot.registry.names("mcp")),
             what="both MCP servers listed")
    return bot


def test_the_time_reference_server_answers_what_time_it_is_in_tokyo(bot, fake_openai):
    fake_openai.script({"tool_calls": [{"name": "time__get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}]},
                       answer_with_tool_result("In Tokyo it is"))
    reply = bot.say(bot.user(), "what time is it in Tokyo?")
    first, second = chat_requests(fake_openai)
    # gating: the turn was classified as one for the MCP tools, and only those were offered
    assert reply.intent.name == "mcp" and reply.response.agent == "mcp_agent"
    assert "time__get_current_time" in offered(first) and "upsert_item" not in offered(first)
    result = json.loads(tool_results(second)[0])
    assert result["result"]["timezone"] == "Asia/Tokyo" and result["result"]["datetime"].endswith("+09:00")
    assert reply.text.startswith("In Tokyo it is") and result["result"]["datetime"] in reply.text
    assert reply.response.tools_used == ["time__get_current_time"]


def test_tools_of_a_streamable_http_server_are_listed_called_and_their_errors_reach_the_model(bot, shop,
                                                                                             fake_openai, caplog):
    names = bot.registry.names("mcp")
    assert {"shop__lookup_order", "shop__check_inventory", "shop__cancel_order"} <= set(names)
    assert "shop__slow_report" not in names                                   # the tenant's denylist
    schema = bot.registry.get("shop__loyalty_points").input_schema
    assert "customer_phone" not in schema.get("properties", {})               # the server fills it, not the model
    user = bot.user()
    fake_openai.script({"tool_calls": [{"name": "shop__lookup_order", "arguments": {"order_id": "A-17"}},
                                       {"name": "shop__check_inventory", "arguments": {"sku": "SKU-9"}},
                                       {"name": "shop__loyalty_points", "arguments": {}}]},
                       {"content": "Your order A-17 has shipped."})
    with caplog.at_level(logging.INFO, logger="shared.tools.registry"):
        reply = bot.say(user, "where is my shop order A-17?")
    assert reply.text == "Your order A-17 has shipped."
    ok, failed, points = [json.loads(t) for t in tool_results(chat_requests(fake_openai)[-1])]
    assert ok["text"].find('"status": "shipped"') >= 0
    assert failed["isError"] is True and "check_inventory" in failed["error"]
    assert json.loads(points["text"])["customer_phone"] == user.phone       # the identity, where config says
    logged = [r for r in caplog.records if r.getMessage() == "tool call"]
    assert {r.tool for r in logged} >= {"shop__lookup_order", "shop__check_inventory"}
    assert all(hasattr(r, "duration_ms") and r.outcome in ("ok", "error") for r in logged)


def test_a_model_cannot_pass_the_user_argument_and_invalid_arguments_never_reach_the_server(bot, shop, fake_openai):
    before = len(calls(shop.record))
    fake_openai.script({"tool_calls": [{"name": "shop__loyalty_points", "arguments": {"customer_phone": "4471234"}},
                                       {"name": "shop__lookup_order", "arguments": {"order": 5}}]},
                       {"content": "sorry"})
    bot.say(bot.user(), "how many shop loyalty points do I have?")
    spoofed, invalid = [json.loads(t) for t in tool_results(chat_requests(fake_openai)[-1])]
    assert spoofed["isError"] and invalid["isError"] and "invalid arguments" in invalid["error"]
    assert len(calls(shop.record)) == before


def test_a_long_result_is_cut_to_the_servers_cap(bot, fake_openai):
    fake_openai.script({"tool_calls": [{"name": "shop__catalogue", "arguments": {}}]}, {"content": "ok"})
    bot.say(bot.user(), "show me the shop catalogue")
    (content,) = tool_results(chat_requests(fake_openai)[-1])
    assert len(json.loads(content)["text"]) <= 500 and "cut from" in content


def test_a_server_that_stops_and_restarts_mid_run_does_not_stop_the_bot(bot, shop, fake_openai):
    shop.stop()
    wait_for(lambda: not any(n.startswith("shop__") for n in bot.registry.names("mcp")), what="shop tools gone")
    fake_openai.script(says("The shop system is not available right now."),
                       says("The shop system is not available right now."))
    reply = bot.say(bot.user(), "where is my shop order A-18?")
    assert reply.text == "The shop system is not available right now."
    assert not any(n.startswith("shop__") for n in offered(chat_requests(fake_openai)[-1]))
    assert "time__get_current_time" in bot.registry.names("mcp")   # the other server is unaffected

    shop.start()
    wait_for(lambda: "shop__lookup_order" in bot.registry.names("mcp"), timeout=30, what="shop tools back")
    fake_openai.script({"tool_calls": [{"name": "shop__lookup_order", "arguments": {"order_id": "A-18"}}]},
                       answer_with_tool_result("Found:"))
    reply = bot.say(bot.user(), "where is my shop order A-18?")
    assert '\\"order_id\\": \\"A-18\\"' in reply.text or "A-18" in reply.text
    assert "shipped" in reply.text


def test_tools_are_listed_again_when_the_server_says_they_changed(settings, pg_url, fake_openai, tmp_path):
    server = HttpMcpServer(tmp_path / "calls.jsonl").start()
    try:
        servers = [{"name": "gifts", "url": server.url, "allow_private_network": True, "ping_seconds": 600}]
        tenant = make_tenant(settings, tenant_doc("mcp_listed", fresh_dsn(pg_url, "mcpl"), fake_openai.url, servers))
        bot = Bot(tenant, Clock())
        bot.registry.start(wait_seconds=20)
        wait_for(lambda: "gifts__open_gift_counter" in bot.registry.names("mcp"), what="gifts listed")
        assert "gifts__gift_wrap" not in bot.registry.names("mcp")
        fake_openai.script({"tool_calls": [{"name": "gifts__open_gift_counter", "arguments": {}}]},
                           {"content": "The gift counter is open."})
        bot.say(bot.user(), "open the shop gift counter please")
        # no re-list is due for 10 minutes: only the server's notification can bring the new tool this soon
        wait_for(lambda: "gifts__gift_wrap" in bot.registry.names("mcp"), timeout=10, what="gift_wrap listed")
    finally:
        server.stop()


def test_fifty_turns_on_twenty_threads_share_the_sessions(bot, shop, fake_openai):
    def model(body):
        messages = body["messages"]
        if messages[-1]["role"] == "tool":
            return {"content": "answer: " + messages[-1]["content"]}
        text = messages[-1]["content"]
        if "Tokyo" in text:
            return {"tool_calls": [{"name": "time__get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}]}
        order = text.split()[-1].rstrip("?")
        return {"tool_calls": [{"name": "shop__lookup_order", "arguments": {"order_id": order}}]}

    fake_openai.script(*[{"respond": model} for _ in range(100)])
    users = [bot.user() for _ in range(50)]
    texts = ["what time is it in Tokyo?" if i % 2 else f"where is my shop order N-{i}?" for i in range(50)]
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda pair: bot.say(*pair), zip(users, texts)))
    for i, reply in enumerate(replies):
        assert reply.text.startswith("answer: "), reply.text
        assert "isError" not in reply.text, reply.text
        assert ("+09:00" in reply.text) if i % 2 else (f"N-{i}" in reply.text)
    assert len(hub()._connections) >= 2 and threading.active_count() < 200


def test_a_stdio_server_sees_only_its_own_env_never_the_workers_or_another_tenants(settings, pg_url, fake_openai,
                                                                                    monkeypatch):
    monkeypatch.setenv("OTHER_TENANT_SECRET", "do-not-leak")
    servers = [{"name": "shop", "command": sys.executable, "args": [SHOP_SCRIPT, "stdio"],
                "env": {"SHOP_TOKEN": "own-secret"}}]
    tenant = make_tenant(settings, tenant_doc("mcp_env", fresh_dsn(pg_url, "mcpenv"), fake_openai.url, servers))
    bot = Bot(tenant, Clock())
    bot.registry.start(wait_seconds=20)
    wait_for(lambda: "shop__env_names" in bot.registry.names("mcp"), what="stdio shop listed")
    fake_openai.script({"tool_calls": [{"name": "shop__env_names", "arguments": {}}]}, {"content": "ok"})
    bot.say(bot.user(), "which env names does the shop server see?")
    seen = tool_results(chat_requests(fake_openai)[-1])[0]   # the names, as structured content or text
    assert "SHOP_TOKEN" in seen and "PATH" in seen
    for name in ("OTHER_TENANT_SECRET", "GAMMA_LLM_KEY", "WEBHOOK_VERIFY_TOKEN", "DATABASE_URL_DEFAULT", "REDIS_URL"):
        assert name not in seen


def test_a_worker_starts_with_its_mcp_server_down_and_offers_the_tools_once_it_is_up(settings, pg_url, fake_openai,
                                                                                    tmp_path, caplog):
    server = HttpMcpServer(tmp_path / "calls.jsonl")          # not started: down when the worker starts
    servers = [{"name": "late", "url": server.url, "allow_private_network": True, "ping_seconds": 0.5}]
    tenant = make_tenant(settings, tenant_doc("mcp_late", fresh_dsn(pg_url, "mcplate"), fake_openai.url, servers))
    with caplog.at_level(logging.WARNING, logger="shared.tools.mcp.hub"):
        Runtime(settings=settings, tenants=TenantRegistry([tenant])).check()   # the worker's start-up: no crash
    assert any(r.getMessage().startswith("MCP server unavailable") and r.mcp_server == "late"
               and r.tenant_id == "mcp_late" for r in caplog.records)
    bot = Bot(tenant, Clock())
    assert bot.registry.names("mcp") == []
    try:
        server.start()
        wait_for(lambda: "late__lookup_order" in bot.registry.names("mcp"), timeout=30, what="tools offered")
    finally:
        server.stop()


def time_server_pids() -> set[int]:
    """Our child processes running mcp-server-time (read from /proc)."""
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"mcp-server-time" in cmdline and int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            pids.add(int(proc.name))
    return pids


def test_a_stdio_server_is_started_once_per_process_and_stopped_with_it():
    before = time_server_pids()
    spec = McpServerSpec(name="time", command=TIME_SERVER, args=("--local-timezone", "UTC"))
    own = McpHub()
    try:
        first = own.connection("mcp_once", spec)
        own.wait_ready([first], 20)
        assert first.connected and own.connection("mcp_once", spec) is first   # one session, one process
        started = time_server_pids() - before
        assert len(started) == 1
    finally:
        own.close()
    wait_for(lambda: not (time_server_pids() & started), timeout=10, what="the stdio server to exit")


def test_mcp_server_mistakes_are_reported_together_with_their_names(settings):
    doc = tenant_doc("mcp_bad", "postgresql://x@127.0.0.1/bad", "http://127.0.0.1:9/v1", [
        {"name": "a__b", "command": "x"},
    ], confirm={"tools": ["nope"]})
    doc2 = tenant_doc("mcp_bad2", "postgresql://x@127.0.0.1/bad2", "http://127.0.0.1:9/v1", [
        {"name": "crm", "url": "http://127.0.0.1:9/mcp"},
    ])
    doc3 = tenant_doc("mcp_bad3", "postgresql://x@127.0.0.1/bad3", "http://127.0.0.1:9/v1", [
        {"name": "both", "command": "x", "url": "https://mcp.example/mcp", "timeout_seconds": 0},
    ])
    with pytest.raises(TenantFileError) as err:
        parse_tenants({"tenants": [doc, doc2, doc3]}, settings, env={})
    text = str(err.value)
    assert "tenant mcp_bad: mcp_servers[0].name" in text
    assert "tenant mcp_bad2 mcp server crm: url points at a private or loopback address" in text
    assert "tenant mcp_bad3 mcp server both: give either command" in text


def test_a_hostname_that_resolves_to_a_private_address_needs_allow_private_network(shop, caplog):
    """The config refuses literal private hosts; a name is resolved before each connection (this machine's own
    name resolves to a loopback or private address here)."""
    host = socket.gethostname()
    url = shop.url.replace("127.0.0.1", host)
    assert host not in ("localhost", "127.0.0.1") and url != shop.url
    own = McpHub()
    try:
        with caplog.at_level(logging.WARNING, logger="shared.tools.mcp.hub"):
            refused = own.connection("mcp_dns", McpServerSpec(name="shop", url=url))
            own.wait_ready([refused], 20)
        assert not refused.connected and refused.tools == ()
        assert any("resolves to a private or loopback address" in str(getattr(r, "error", "")) and
                   r.mcp_server == "shop" for r in caplog.records)
    finally:
        own.close()
    # with the tenant's allow_private_network the same name passes the check (our MCP test server itself answers
    # only to 127.0.0.1 and localhost in the Host header: the SDK's DNS-rebinding protection)
    def check(spec: McpServerSpec) -> None:  # a loop of its own on a thread: the browser tests' loop may run here
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, refuse_private_address(spec)).result()

    check(McpServerSpec(name="shop", url=url, allow_private_network=True))
    with pytest.raises(PermissionError, match="allow_private_network"):
        check(McpServerSpec(name="shop", url=url))
