"""The tools one tenant offers its agents, and the one place a model's tool call is checked and run.

Guarantees of `ToolRegistry.call`:
- it never raises: an unknown tool, arguments that are not JSON, arguments the tool's input schema rejects
  (JSON Schema Draft 2020-12, checked before `invoke`), a ToolError and any other exception all come back as
  `ToolResult(is_error=True)` whose content is `{"isError": true, "error": "..."}` (MCP's isError) the model
  can act on; unexpected exceptions say only "internal error" (their text may hold SQL or secrets);
- each invoke runs in a savepoint of the caller's transaction: a failing tool rolls back its own writes and
  nothing else, and the caller's transaction stays usable;
- every call is logged once with tool, duration_ms and outcome, never with argument values;
- what goes into the model's context is at most MAX_RESULT_CHARS characters: a longer content is replaced by
  valid JSON `{"truncated": true, "original_chars": N, "partial": "<the first characters of the JSON text>",
  "note": "..."}` (plus `"isError": true` for an error); `ToolResult.data` keeps the whole result for the server.

Adding a tool (one module):
1. create `shared/tools/<topic>.py` with a `Tool` subclass per tool: `name`, `description`, an `input_schema`
   with `"type": "object"` at the root, `annotations` (readOnlyHint / destructiveHint), `group` ("db" unless it
   leaves our databases) and `invoke(ctx, args)` returning JSON-serialisable data or raising `ToolError` with a
   message the model can fix; use only `ctx.user_id` for the user and `ctx.conn` without committing;
2. expose `<TOPIC>_TOOLS: list[Tool]` there and add it to `builtin_tools()` below.
Per-tenant HTTP tools need no code: they are declared in tenants.yaml (see `shared.tools.http`), and neither do
the tools of a tenant's MCP servers (`mcp_servers:`, see `shared.tools.mcp`): those come and go with their servers,
so the registry asks its sources for them on each lookup (a source's tools never shadow a static tool's name);
a tool a turn was offered may be gone by the time the model calls it, and is then an "unknown tool" error.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
import traceback
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Iterable
from uuid import UUID

from jsonschema import Draft202012Validator

from shared import metrics
from shared.errors import ConfigError
from shared.config.tenants import Tenant
from shared.tools.base import Tool, ToolContext, ToolError, ToolResult
from shared.tools.http import parse_http_tools
from shared.tools.knowledge_tools import KNOWLEDGE_TOOLS
from shared.tools.mcp.adapter import McpToolSource
from shared.tools.mcp.hub import hub as hub_of_process
from shared.tools.memory_tools import MEMORY_TOOLS
from shared.tools.reminders import REMINDER_TOOLS
from shared.tools.schema import object_schema_problem

log = logging.getLogger(__name__)

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")   # OpenAI's rule for function names
MAX_SCHEMA_ERRORS = 3
MAX_RESULT_CHARS = 4000      # ~1k tokens: a tool answer may not crowd the history and memories out of the prompt


def cap_content(content: str, limit: int = MAX_RESULT_CHARS, is_error: bool = False) -> str:
    """`content` itself when it fits in `limit` characters, else valid JSON text of at most `limit` characters
    that says the result was truncated and carries as much of its beginning as fits (an error stays an error)."""
    if len(content) <= limit:
        return content
    doc: dict[str, Any] = {"isError": True} if is_error else {}
    doc.update({"truncated": True, "original_chars": len(content), "partial": "",
                "note": "the result was too long and was cut; ask for less (a narrower query) if you need the rest"})
    budget = max(0, limit - len(json.dumps(doc, ensure_ascii=False)))
    while True:
        doc["partial"] = content[:budget]
        text = json.dumps(doc, ensure_ascii=False)
        if len(text) <= limit or budget == 0:
            return text
        budget = max(0, budget - (len(text) - limit))  # each character cut shortens the text by 1 or more


def error_content(message: str) -> str:
    return json.dumps({"isError": True, "error": message}, ensure_ascii=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{value.__class__.__name__} is not JSON serialisable")


def parse_arguments(raw: str | None) -> dict[str, Any]:
    """The model's argument text as a JSON object; empty text means no arguments."""
    if raw is None or not str(raw).strip():
        return {}
    try:
        args = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise ToolError(f"arguments are not valid JSON ({getattr(exc, 'msg', 'unreadable')}); "
                        "send a JSON object") from None
    if not isinstance(args, dict):
        raise ToolError("arguments must be a JSON object")
    return args


def schema_problems(validator: Draft202012Validator, args: dict[str, Any]) -> list[str]:
    """Up to MAX_SCHEMA_ERRORS readable problems, each prefixed with the argument it is about."""
    problems = []
    for error in sorted(validator.iter_errors(args), key=lambda e: list(map(str, e.absolute_path))):
        where = "/".join(str(p) for p in error.absolute_path) or "arguments"
        problems.append(f"{where}: {error.message}")
        if len(problems) == MAX_SCHEMA_ERRORS:
            break
    return problems


class ToolRegistry:
    """Tools by name, in registration order. Build it, `freeze()` it, then share it between threads."""

    def __init__(self, tools: Iterable[Tool] = (), confirm: Iterable[str] = ()):
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        self._sources: list[McpToolSource] = []
        self._confirm = frozenset(confirm)   # the tenant's `confirm.tools`
        self._frozen = False
        for tool in tools:
            self.register(tool)

    def attach(self, source: McpToolSource) -> None:
        """Add a source of tools that change at run time (a tenant's MCP servers); each tool brings its own
        `validator` of its input schema."""
        if self._frozen:
            raise RuntimeError("the tool registry is frozen; build a new one to change its tools")
        self._sources.append(source)

    def start(self, wait_seconds: float = 0.0) -> None:
        """Connect the sources now (worker start-up) and wait up to `wait_seconds` for their first answers."""
        for source in self._sources:
            connections = source.connections()
            if wait_seconds and connections:
                hub_of_process().wait_ready(connections, wait_seconds)

    def _current(self) -> dict[str, Tool]:
        """The static tools, then what each source offers right now (one snapshot per lookup)."""
        if not self._sources:
            return self._tools
        tools = dict(self._tools)
        for source in self._sources:
            for tool in source.tools():
                tools.setdefault(tool.name, tool)
        return tools

    def needs_confirmation(self, name: str) -> bool:
        """Whether a call of `name` waits for the user's yes (shared.tools.confirmation)."""
        tool = self.get(name)
        return tool is not None and (bool(getattr(tool, "needs_confirmation", False)) or name in self._confirm)

    def register(self, tool: Tool) -> Tool:
        """Add a tool; its name, description and input schema are checked now rather than at the first call."""
        if self._frozen:
            raise RuntimeError("the tool registry is frozen; build a new one to change its tools")
        name = getattr(tool, "name", "")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise ValueError(f"tool name {name!r} must be 1-64 letters, digits, '_' or '-'")
        if name in self._tools:
            raise ValueError(f"tool {name} is registered twice")
        if not isinstance(tool.description, str) or not tool.description.strip():
            raise ValueError(f"tool {name} has no description")
        if not isinstance(tool.group, str) or not tool.group:
            raise ValueError(f"tool {name} has no group")
        problem = object_schema_problem(tool.input_schema)
        if problem:
            raise ValueError(f"tool {name}: input_schema {problem}")
        self._tools[name] = tool
        self._validators[name] = Draft202012Validator(tool.input_schema)
        return tool

    def freeze(self) -> "ToolRegistry":
        self._frozen = True
        return self

    def get(self, name: str) -> Tool | None:
        return self._current().get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._current()

    def __len__(self) -> int:
        return len(self._current())

    def names(self, group: str | None = None) -> list[str]:
        """Tool names in registration order, optionally only one group ("db", "http", "mcp")."""
        return [n for n, t in self._current().items() if group is None or t.group == group]

    def openai_schemas(self, names: Iterable[str] | None = None) -> list[dict]:
        """The named tools (all when None) in OpenAI `tools` format, in registration order whatever the input order.
        A name no static tool has and no source offers any more (its MCP server went away) is left out; an unknown
        name in a registry without sources is a KeyError."""
        tools = self._current()
        if names is None:
            wanted = set(tools)
        else:
            wanted = set(names)
            unknown = sorted(wanted - set(tools))
            if unknown and not self._sources:
                raise KeyError(f"unknown tool(s): {', '.join(unknown)}")
        return [t.openai_schema() for n, t in tools.items() if n in wanted]

    def checked_arguments(self, name: str,
                          raw_arguments: str | None) -> tuple[dict[str, Any] | None, ToolResult | None]:
        """The call's arguments parsed and validated against the tool's schema, or the error result the model
        gets (unknown tool, not JSON, invalid): the checks of `call`, for a call that is to wait for a yes."""
        checked = self._checked(name, raw_arguments, time.perf_counter())
        return (None, checked) if isinstance(checked, ToolResult) else (checked[1], None)

    def _checked(self, name: str, raw_arguments: str | None, started: float) -> tuple[Tool, dict] | ToolResult:
        tool = self.get(name)  # one lookup: a source's tool that goes away later is still this object
        if tool is None:
            known = ", ".join(self._current()) or "none"
            return self._done(str(name)[:64], started, error_content(f"unknown tool {str(name)[:64]!r}; "
                                                                      f"available tools: {known}"), "unknown_tool")
        try:
            args = parse_arguments(raw_arguments)
        except ToolError as exc:
            return self._done(name, started, error_content(str(exc)), "invalid_json")
        problems = schema_problems(getattr(tool, "validator", None) or self._validators[name], args)
        if problems:
            return self._done(name, started, error_content("invalid arguments: " + "; ".join(problems)),
                              "invalid_arguments")
        return tool, args

    def call(self, ctx: ToolContext, name: str, raw_arguments: str | None) -> ToolResult:
        """Parse, validate and run one tool call; see the module docstring for what it guarantees."""
        started = time.perf_counter()
        checked = self._checked(name, raw_arguments, started)
        if isinstance(checked, ToolResult):
            return checked
        tool, args = checked
        try:
            # Savepoint: a failing tool undoes its own writes only, and the caller's transaction stays usable.
            with ctx.conn.transaction():
                data = tool.invoke(ctx, args)
                content = json.dumps(data, ensure_ascii=False, default=_json_default)
        except ToolError as exc:
            return self._done(name, started, error_content(str(exc) or "the tool failed"), "tool_error")
        except Exception as exc:  # noqa: BLE001 - a broken tool must not break the turn
            return self._done(name, started, error_content(f"internal error in tool {name}; try something else"),
                              "exception", exc)
        return self._done(name, started, content, None, data=data)

    @staticmethod
    def _done(name: str, started: float, content: str, error_kind: str | None, exc: BaseException | None = None,
              data: Any = None) -> ToolResult:
        duration_ms = int((time.perf_counter() - started) * 1000)
        fields: dict[str, Any] = {"tool": name, "duration_ms": duration_ms,
                                  "outcome": "error" if error_kind else "ok"}
        if len(content) > MAX_RESULT_CHARS:
            fields["truncated_from_chars"] = len(content)
            content = cap_content(content, is_error=error_kind is not None)
        if error_kind:
            fields["error_kind"] = error_kind
        if exc is not None:
            # The type and the frames, not the message: messages may quote argument values or secrets.
            fields["error_type"] = exc.__class__.__name__
            fields["traceback"] = "".join(traceback.format_tb(exc.__traceback__))
            log.error("tool call failed", extra=fields)
        else:
            log.info("tool call", extra=fields)
        # A name the model made up is not a label value: labels stay bounded to the tenant's tools.
        metrics.tool_call("unknown" if error_kind == "unknown_tool" else name, error_kind is None)
        return ToolResult(tool=name, content=content, is_error=error_kind is not None, duration_ms=duration_ms,
                          data=data if error_kind is None else None, error_kind=error_kind)


def builtin_tools() -> list[Tool]:
    """The tools every tenant has: memory, reminders and the business's knowledge (group "db"; the knowledge
    search is offered only to tenants with documents: shared.conversation.engine)."""
    return list(MEMORY_TOOLS) + list(REMINDER_TOOLS) + list(KNOWLEDGE_TOOLS)


_cache: dict[str, tuple[Tenant, ToolRegistry]] = {}
_cache_lock = threading.Lock()


def build_registry(tenant: Tenant) -> ToolRegistry:
    """The tenant's frozen registry: built-ins, its HTTP tools and its MCP servers' tools (a source: its servers are
    connected by `ToolRegistry.start`, which workers call at start-up); built once per Tenant object and cached.

    Raises ConfigError for a bad `http_tools` entry or an HTTP tool named like a built-in.
    """
    with _cache_lock:
        cached = _cache.get(tenant.tenant_id)
        if cached is not None and cached[0] is tenant:
            return cached[1]
        registry = ToolRegistry(builtin_tools(), confirm=tenant.confirm.tools)
        for tool in parse_http_tools(tenant):
            if tool.name in registry:
                raise ConfigError(f"tenant {tenant.tenant_id} http tool {tool.name}: "
                                  "name is already used by a built-in tool")
            registry.register(tool)
        if tenant.mcp_servers:
            registry.attach(McpToolSource(tenant.tenant_id, tenant.mcp_servers))
        registry.freeze()
        # Keyed by tenant id, holding the Tenant itself: a reloaded tenant (new object) gets a fresh registry.
        _cache[tenant.tenant_id] = (tenant, registry)
        return registry
