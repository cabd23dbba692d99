"""Our own MCP test server, built with the SDK's server API (`FastMCP` is `mcp.server.mcpserver.MCPServer` in mcp 2.x),
run as a child process so a test can stop and restart it:

    python tests/mcp_servers.py http --port 8123 --record /tmp/calls.jsonl
    python tests/mcp_servers.py stdio --record /tmp/calls.jsonl

Every tool call is appended to the `--record` file (one JSON line: tool and arguments), so a test can tell whether
a tool ran at all (a destructive one must not before the user's yes). `HttpMcpServer` starts, stops and restarts
the HTTP one on a fixed port. `Bot` runs turns of a tenant through the real engine (shared.conversation.engine.respond)
on its own database, with an injected clock (it imports the bot's modules lazily: the server process needs only the
SDK, even with a stdio server's bare environment).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the child process runs this file as a script

from helpers import GAMMA_LLM_KEY, free_port, new_user  # noqa: E402

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True)


def build(record: str | None) -> MCPServer:
    server = MCPServer("wabot-test-shop", version="1.0")

    def note(tool: str, **args) -> None:
        if record:
            with open(record, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"tool": tool, "args": args, "pid": os.getpid()}) + "\n")

    @server.tool(description="Look up the shipping status of a shop order by its order id", annotations=READ_ONLY)
    def lookup_order(order_id: str) -> dict:
        note("lookup_order", order_id=order_id)
        return {"order_id": order_id, "status": "shipped", "carrier": "DHL"}

    @server.tool(description="Check the shop inventory warehouse (always fails in this test server)",
                 annotations=READ_ONLY)
    def check_inventory(sku: str) -> str:
        note("check_inventory", sku=sku)
        raise ValueError(f"inventory database unreachable for {sku}")

    @server.tool(description="Cancel a shop order for good (the customer is refunded)", annotations=DESTRUCTIVE)
    def cancel_order(order_id: str, customer_phone: str) -> str:
        note("cancel_order", order_id=order_id, customer_phone=customer_phone)
        return f"order {order_id} of {customer_phone} cancelled"

    @server.tool(description="The shop's loyalty points of the customer", annotations=READ_ONLY)
    def loyalty_points(customer_phone: str) -> dict:
        note("loyalty_points", customer_phone=customer_phone)
        return {"customer_phone": customer_phone, "points": 120}

    @server.tool(description="The environment variable names the shop server process sees", annotations=READ_ONLY)
    def env_names() -> list[str]:
        return sorted(os.environ)

    @server.tool(description="A very long shop catalogue text", annotations=READ_ONLY)
    def catalogue() -> str:
        return "catalogue " + "x" * 20000

    @server.tool(description="Slow shop report generation", annotations=READ_ONLY)
    def slow_report(seconds: float) -> str:
        time.sleep(seconds)
        return "report ready"

    @server.tool(description="Open the shop's gift counter: adds the gift_wrap tool and announces the change")
    async def open_gift_counter(ctx: Context) -> str:
        def gift_wrap(order_id: str) -> str:
            note("gift_wrap", order_id=order_id)
            return f"order {order_id} will be gift wrapped"

        server.add_tool(gift_wrap, description="Gift wrap a shop order", annotations=READ_ONLY)
        await ctx.notify_tools_changed()
        return "gift counter open"

    return server


class HttpMcpServer:
    """The test server over Streamable HTTP on 127.0.0.1:`port`, as a child process (stop it, start it again)."""

    def __init__(self, record: Path, port: int | None = None):
        self.record, self.port = record, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "HttpMcpServer":
        self.proc = subprocess.Popen([sys.executable, __file__, "http", "--port", str(self.port),
                                      "--record", str(self.record)], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("the MCP test server exited at start-up")
                time.sleep(0.05)
        raise RuntimeError("the MCP test server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """Our HTTP MCP server for one test module (imported by the modules that use it), stopped after it."""
    server = HttpMcpServer(tmp_path_factory.mktemp("mcp") / "calls.jsonl").start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def quiet_model(fake_openai):
    """Imported by a test module: every test of it starts and ends with the fake model's script and log empty."""
    fake_openai.reset()
    yield
    fake_openai.reset()


def calls(record: Path) -> list[dict]:
    """The tool calls the server recorded, oldest first."""
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


class Clock:
    """The injected clock of a test: aware UTC, moved by hand."""

    def __init__(self, start: datetime = datetime(2026, 7, 1, 10, 0, tzinfo=timezone.utc)):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@dataclass
class User:
    id: int
    phone: str


class Bot:
    """Turns of one tenant through the engine, each in its own transaction on the tenant's database."""

    def __init__(self, tenant, clock: Clock):
        from shared.llm.factory import provider_for
        from shared.tools.registry import build_registry

        self.tenant, self.clock = tenant, clock
        self.registry = build_registry(tenant)
        self.llm = provider_for(tenant.llm)

    def user(self) -> User:
        phone = new_user()
        with psycopg.connect(self.tenant.db_dsn, autocommit=True) as conn:
            row = conn.execute("INSERT INTO users (phone, name) VALUES (%s, 'Test') RETURNING id", (phone,)).fetchone()
        return User(row[0], phone)

    def say(self, user: User, text: str, commit: bool = True):
        """The engine's reply to `text`; `commit=False` rolls the turn's transaction back (a worker that died)."""
        from shared.conversation.engine import respond

        with psycopg.connect(self.tenant.db_dsn, row_factory=dict_row) as conn:
            reply = respond(tenant=self.tenant, conn=conn, llm=self.llm, registry=self.registry, memory=None,
                            user_id=user.id, phone=user.phone, text=text, history=[], now=self.clock(),
                            clock=self.clock, request_id=None)
            conn.commit() if commit else conn.rollback()
        return reply

    def pending(self, user: User) -> list[dict]:
        with psycopg.connect(self.tenant.db_dsn, row_factory=dict_row, autocommit=True) as conn:
            return conn.execute("SELECT * FROM pending_actions WHERE user_id = %s ORDER BY id", (user.id,)).fetchall()


def tenant_doc(tenant_id: str, dsn: str, llm_url: str, servers: list[dict], **more) -> dict:
    return {"tenant_id": tenant_id, "waba_number": "+4470000" + str(abs(hash(tenant_id)) % 10**5).zfill(5),
            "db_dsn": dsn, "embedding_model": "local-hash", "vector_store": "sql_fallback",
            "enabled_agents": ["orchestrator", "db_agent"],
            "llm": {"provider": "openai", "model_chat": "gpt-4o-mini", "base_url": llm_url, "api_key": GAMMA_LLM_KEY},
            "config": {"business_name": "Shop", "timezone": "UTC", "rag_enabled": False, "max_context_tokens": 6000},
            "mcp_servers": servers, **more}


def make_tenant(settings, doc: dict):
    """The tenant of `doc`, parsed like tenants.yaml and its database migrated."""
    from shared.config.tenants import parse_tenants
    from shared.db.migrate import migrate_tenant

    tenant = parse_tenants({"tenants": [doc]}, settings, env={}).require(doc["tenant_id"])
    migrate_tenant(tenant)
    return tenant


def chat_requests(fake_openai) -> list[dict]:
    return [r for r in fake_openai.requests if r["path"] == "/v1/chat/completions"]


def answer_with_tool_result(prefix: str):
    """A scripted model turn that reads the tool result it was given and repeats it."""
    return {"respond": lambda body: {"content": prefix + " " + [m for m in body["messages"]
                                                                 if m["role"] == "tool"][-1]["content"]}}


def says(text: str) -> dict:
    """A scripted model answer that also survives being asked to classify the message first (the intent call)."""
    return {"respond": lambda body: {"content": "unknown" if body["messages"][0]["content"].startswith("Classify")
                                     else text}}


def tool_results(request: dict) -> list[str]:
    """The tool messages a model request carried (what the model saw of the tools' results)."""
    return [m.get("content") or "" for m in request["json"]["messages"] if m.get("role") == "tool"]


def offered(request: dict) -> list[str]:
    return [t["function"]["name"] for t in request["json"].get("tools") or []]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["http", "stdio"])
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--record", default=None)
    options = parser.parse_args()
    shop = build(options.record)
    if options.transport == "stdio":
        shop.run("stdio")
    else:
        shop.run("streamable-http", host="127.0.0.1", port=options.port)
