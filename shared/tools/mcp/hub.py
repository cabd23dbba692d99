"""The MCP sessions of one worker process, on one asyncio loop of their own, called into safely from any thread.

Celery's thread pool is synchronous; the SDK's sessions are async. One daemon thread per process runs one event
loop, and every session of the process lives on it:
- each server (per tenant: tenants never share a session, a process or a header) is one `Connection` whose whole
  life is one task on that loop (the SDK's anyio scopes must be left by the task that entered them): connect,
  list the tools, then watch the session (a re-list every `ping_seconds` as the liveness check, and at once on
  `notifications/tools/list_changed`), and on any failure close it and connect again with a growing pause
  (0.5 s doubling to 10 s). Meanwhile its tools are not offered (`tools` is empty) and a warning is logged: a
  server that is down never stops a worker;
- a thread calls a tool with `Connection.call`, which hands the coroutine to the loop
  (`run_coroutine_threadsafe`) and waits at most the server's timeout; many threads share one session (JSON-RPC
  requests are multiplexed by id);
- stdio servers are started once per process, by their connection's task, and stopped with it: `McpHub.close`
  (atexit, and a forked child builds its own hub) cancels every task, which closes the sessions and ends the
  server processes.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import ipaddress
import logging
import os
import socket
import threading
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx2
import mcp_types as types
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from shared.tools.mcp.spec import McpServerSpec
from shared.tools.netguard import is_blocked_ip

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 10.0
CALL_GRACE_SECONDS = 2.0       # a call waits this much longer than its server's timeout before giving up


class McpUnavailable(Exception):
    """The server cannot take the call now (down, reconnecting, timed out): the model is told, the turn goes on."""


class Connection:
    """One tenant's session with one MCP server; `tools` is the current listing (empty while down)."""

    def __init__(self, tenant_id: str, spec: McpServerSpec, loop: asyncio.AbstractEventLoop):
        self.tenant_id, self.spec, self._loop = tenant_id, spec, loop
        self.tools: tuple[types.Tool, ...] = ()   # replaced whole, never mutated: threads read it without a lock
        self.version = 0                          # bumped on every new listing (adapters are rebuilt then)
        self.attempts = 0                         # connection attempts so far (start-up waits for the first)
        self._client: Client | None = None
        self._refresh: asyncio.Event | None = None
        self._broken: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    def start(self) -> None:
        self._loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        self._refresh, self._broken = asyncio.Event(), asyncio.Event()
        self._task = self._loop.create_task(self._run(), name=f"mcp:{self.tenant_id}:{self.spec.name}")

    def _fields(self, **more: Any) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "mcp_server": self.spec.name, "transport": self.spec.transport, **more}

    async def _run(self) -> None:
        """Connect, serve, reconnect: until the hub is closed (the task is cancelled)."""
        delay = FIRST_RETRY_SECONDS
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - anything the transport throws: down, retried
                log.warning("MCP server unavailable; its tools are not offered until it answers again",
                            extra=self._fields(error_type=exc.__class__.__name__, error=_describe(exc),
                                               retry_in_s=delay))
            finally:
                self._client, self.tools = None, ()
                self.attempts += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)

    async def _session(self) -> None:
        async with AsyncExitStack() as stack:
            client = Client(await self._transport(stack), message_handler=self._on_message, cache=None,
                            read_timeout_seconds=self.spec.timeout_seconds)
            await stack.enter_async_context(client)
            await self._list(client)
            self._client = client
            self._broken.clear()
            log.info("MCP server connected", extra=self._fields(tools=[t.name for t in self.tools]))
            listener = asyncio.create_task(self._listen(client))
            try:
                await self._watch(client)
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def _transport(self, stack: AsyncExitStack) -> Any:
        spec = self.spec
        if spec.command:
            # env: the SDK's short list of harmless variables plus the server's own; never our environment
            return StdioServerParameters(command=spec.command, args=list(spec.args), env=dict(spec.env))
        await refuse_private_address(spec)
        http = create_mcp_http_client(headers=dict(spec.headers),
                                      timeout=httpx2.Timeout(spec.timeout_seconds, read=300.0))
        await stack.enter_async_context(http)
        return streamable_http_client(spec.url, http_client=http)

    async def _list(self, client: Client, quiet: bool = False) -> None:
        tools: list[types.Tool] = []
        cursor = None
        for _ in range(20):  # pages
            page = await client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                break
        offered = tuple(t for t in tools if self.spec.offers(t.name))
        if quiet and offered == self.tools:
            return
        self.tools = offered
        self.version += 1

    async def _watch(self, client: Client) -> None:
        """Until the session fails: re-list when told the tools changed, ping when idle."""
        while True:
            waits = [asyncio.ensure_future(self._refresh.wait()), asyncio.ensure_future(self._broken.wait())]
            try:
                await asyncio.wait(waits, timeout=self.spec.ping_seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
            if self._broken.is_set():
                raise McpUnavailable("a call found the session broken")
            if self._refresh.is_set():
                self._refresh.clear()
                await asyncio.wait_for(self._list(client), self.spec.timeout_seconds)
                log.info("MCP tools re-listed", extra=self._fields(tools=[t.name for t in self.tools]))
                continue
            # The liveness check is a re-list (`ping` is gone from 2026-07-28 sessions): it also catches a change
            # a server did not announce. Changed tools are swapped in whole.
            await asyncio.wait_for(self._list(client, quiet=True), self.spec.timeout_seconds)

    async def _listen(self, client: Client) -> None:
        """2026-07-28 sessions announce list changes only to a `subscriptions/listen` stream; older ones send
        `notifications/tools/list_changed` to `_on_message`. Best effort: without it the listing stays as is."""
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    self._refresh.set()
        except ListenNotSupportedError:
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - servers that do not serve subscriptions
            log.debug("MCP list-change subscription not available", extra=self._fields(error=_describe(exc)))

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._refresh.set()

    # ---- called from worker threads

    def call(self, name: str, arguments: dict[str, Any], timeout: float) -> types.CallToolResult:
        """The server's answer to one tool call. McpUnavailable when it cannot be reached or does not answer in
        time; MCPError for a protocol-level error (unknown tool, invalid params): both reach the model as errors."""
        client = self._client
        if client is None:
            raise McpUnavailable(f"the {self.spec.name} server is not connected right now")
        future = asyncio.run_coroutine_threadsafe(self._call(client, name, arguments, timeout), self._loop)
        try:
            return future.result(timeout + CALL_GRACE_SECONDS)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise McpUnavailable(f"the {self.spec.name} server did not answer within {timeout:g} s") from None

    async def _call(self, client: Client, name: str, arguments: dict[str, Any],
                    timeout: float) -> types.CallToolResult:
        try:
            return await asyncio.wait_for(client.call_tool(name, arguments, read_timeout_seconds=timeout), timeout)
        except MCPError:
            raise
        except (asyncio.TimeoutError, TimeoutError):
            raise McpUnavailable(f"the {self.spec.name} server did not answer within {timeout:g} s") from None
        except Exception as exc:
            self._broken.set()  # the session is suspect: the watcher reconnects
            raise McpUnavailable(f"the {self.spec.name} server failed ({exc.__class__.__name__})") from None


async def refuse_private_address(spec: McpServerSpec) -> None:
    """Unless `allow_private_network`, a URL whose host resolves to a private, loopback or link-local address is
    refused before each (re)connection (the config check sees literal hosts only; the HTTP tools' guard is the
    same rule, shared.tools.netguard.is_blocked_ip). PermissionError: the server is down and retried, and the
    warning says why."""
    if spec.allow_private_network or not spec.url:
        return
    url = httpx2.URL(spec.url)
    port = url.port or (443 if url.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    blocked = [info[4][0] for info in infos if is_blocked_ip(ipaddress.ip_address(info[4][0].split("%")[0]))]
    if blocked:
        raise PermissionError(f"{url.host} resolves to a private or loopback address ({blocked[0]}); set "
                              "allow_private_network: true if the server is on your own network")


def _describe(exc: BaseException) -> str:
    """A short text of an exception (of the first leaf of an exception group), never its arguments' values."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{exc.__class__.__name__}: {str(exc)[:200]}"


class McpHub:
    """The process's MCP loop and its connections, keyed by (tenant id, server name)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._connections: dict[tuple[str, str], Connection] = {}
        self._thread = threading.Thread(target=self._loop.run_forever, name="mcp-loop", daemon=True)
        self._thread.start()

    def connection(self, tenant_id: str, spec: McpServerSpec) -> Connection:
        """The connection of this tenant's server, started on first use. A new spec (a reloaded tenants file) of
        the same name replaces the old connection."""
        key = (tenant_id, spec.name)
        with self._lock:
            conn = self._connections.get(key)
            if conn is not None and conn.spec == spec:
                return conn
            if conn is not None:
                self._stop(conn)
            conn = self._connections[key] = Connection(tenant_id, spec, self._loop)
            conn.start()
            return conn

    def started(self, tenant_id: str, spec: McpServerSpec) -> Connection | None:
        """The connection of this tenant's server if `connection` started it (for this very spec), else None."""
        with self._lock:
            conn = self._connections.get((tenant_id, spec.name))
        return conn if conn is not None and conn.spec == spec else None

    def wait_ready(self, connections: list[Connection], timeout: float) -> None:
        """Wait (at most `timeout` s in all) until each connection is up or has failed once: start-up offers the
        tools of the servers that answered; the others are retried in the background."""
        deadline = time.monotonic() + timeout
        for conn in connections:
            while not conn.connected and conn.attempts == 0 and time.monotonic() < deadline:
                threading.Event().wait(0.05)

    def _stop(self, conn: Connection) -> concurrent.futures.Future | None:
        task = conn._task  # noqa: SLF001 - the hub owns its connections
        if task is None or self._loop.is_closed():
            return None

        async def cancel() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        return asyncio.run_coroutine_threadsafe(cancel(), self._loop)

    def close(self, timeout: float = 10.0) -> None:
        """Close every session (stdio server processes end with theirs), then stop the loop."""
        with self._lock:
            stopping = [f for f in (self._stop(c) for c in self._connections.values()) if f is not None]
            self._connections.clear()
        for future in stopping:
            try:
                future.result(timeout)
            except Exception:  # noqa: BLE001 - closing: nothing left to save
                log.warning("an MCP session did not close cleanly", exc_info=True)
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)


_hub: McpHub | None = None
_hub_lock = threading.Lock()


def hub() -> McpHub:
    """This process's hub (a forked child gets its own: a loop thread does not survive a fork)."""
    global _hub
    with _hub_lock:
        if _hub is None or _hub.pid != os.getpid():
            _hub = McpHub()
        return _hub


def close_hub() -> None:
    """Stop every MCP session of this process (worker shutdown, atexit); a later `hub()` starts afresh."""
    global _hub
    with _hub_lock:
        current, _hub = _hub, None
    if current is not None and current.pid == os.getpid():
        current.close()


atexit.register(close_hub)
