"""Each tool an MCP server lists, as a tool of our registry (shared.tools.registry attaches a tenant's source).

- name `<server>__<tool>` (characters OpenAI refuses become '_', a long name is cut and given a short hash), group
  "mcp" (the mcp_agent's), the server's description and input schema; a tool whose schema is not a JSON Schema
  object is not offered (a warning names it). The registry validates the model's arguments against that schema
  before the call, logs every call with its duration and outcome, and returns errors to the model;
- `isError` results, protocol errors (unknown tool, invalid params) and an unreachable or slow server all come
  back to the model as errors (ToolError); never as an exception out of the turn;
- the result: the structured content when the server gives it and it fits the server's `max_result_chars`, else
  the text content cut to that size (images and other blocks are named, not sent); it reaches the model as data
  (see shared.conversation.prompt: results are never instructions);
- `user_argument` (tenant config): the one argument that carries the user's number, filled by the server from
  the turn's user. It is removed from the schema the model sees, and an argument of that name from the model
  is refused. No other argument is ever filled with the user's identity;
- annotations: `readOnlyHint`, and `destructiveHint` only when the server says so explicitly (MCP's default of
  true for tools without annotations would make every plain tool destructive). A destructive tool is run only
  after the user's yes (shared.tools.confirmation).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import threading
from typing import Any

import mcp_types as types
from jsonschema import Draft202012Validator
from mcp.shared.exceptions import MCPError

from shared.tools.base import Tool, ToolAnnotations, ToolContext, ToolError
from shared.tools.mcp.hub import Connection, McpUnavailable, hub
from shared.tools.mcp.spec import SEPARATOR, McpServerSpec
from shared.tools.schema import object_schema_problem

log = logging.getLogger(__name__)

MAX_NAME = 64
MAX_DESCRIPTION = 1000
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def tool_name(server: str, remote: str) -> str:
    """Our name of the server's tool `remote`: `<server>__<remote>`, within OpenAI's rule for function names."""
    name = f"{server}{SEPARATOR}{_UNSAFE.sub('_', remote)}"
    if len(name) <= MAX_NAME and _UNSAFE.sub("_", remote) == remote:
        return name
    digest = hashlib.blake2b(remote.encode(), digest_size=4).hexdigest()
    return f"{name[:MAX_NAME - 9]}_{digest}"


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f" […cut from {len(text)} characters…]"
    return text[:max(0, limit - len(marker))] + marker


class McpTool(Tool):
    """One listed MCP tool; immutable once built, so every thread shares it."""

    group = "mcp"

    def __init__(self, spec: McpServerSpec, conn: Connection, listed: types.Tool):
        self.spec, self._conn, self.remote = spec, conn, listed.name
        self.name = tool_name(spec.name, listed.name)
        text = (listed.description or listed.title or listed.name).strip()
        self.description = clip(text, MAX_DESCRIPTION)
        schema = copy.deepcopy(dict(listed.input_schema))
        self._binds_user = bool(spec.user_argument) and spec.user_argument in (schema.get("properties") or {})
        if self._binds_user:
            schema["properties"] = {k: v for k, v in schema["properties"].items() if k != spec.user_argument}
            schema["required"] = [r for r in schema.get("required") or [] if r != spec.user_argument]
        self.input_schema = schema
        self.problem = object_schema_problem(schema)
        self.validator = None if self.problem else Draft202012Validator(schema)
        hints = listed.annotations
        read_only = bool(hints and hints.read_only_hint)
        self.annotations = ToolAnnotations(
            readOnlyHint=read_only, destructiveHint=bool(hints and hints.destructive_hint is True and not read_only),
            openWorldHint=True)
        self.needs_confirmation = self.annotations.destructiveHint

    def __repr__(self) -> str:
        return f"McpTool({self.name!r})"

    def invoke(self, ctx: ToolContext, args: dict[str, Any]) -> Any:
        spec = self.spec
        if spec.user_argument and spec.user_argument in args:
            raise ToolError(f"{self.name}: {spec.user_argument} is filled in by the server; do not pass it")
        if self._binds_user:
            if not ctx.user_phone:
                raise ToolError(f"{self.name}: the user's phone number is not known, so this tool cannot be used")
            args = {**args, spec.user_argument: str(ctx.user_phone)}
        try:
            result = self._conn.call(self.remote, args, spec.timeout_seconds)
        except McpUnavailable as exc:
            raise ToolError(f"{self.name}: {exc}; try again later") from None
        except MCPError as exc:
            raise ToolError(clip(f"{self.name}: the server refused the call: {exc.error.message}",
                                 spec.max_result_chars)) from None
        return result_data(self.name, result, spec.max_result_chars)


def result_data(name: str, result: types.CallToolResult, limit: int) -> dict[str, Any]:
    """What the model sees of a result, within `limit` characters of text; ToolError for an isError result."""
    texts = [b.text for b in result.content if isinstance(b, types.TextContent)]
    omitted = sorted({b.type for b in result.content if not isinstance(b, types.TextContent)})
    text = "\n".join(texts).strip()
    if result.is_error:
        raise ToolError(clip(f"{name}: {text or 'the tool reported an error'}", limit))
    data: dict[str, Any] = {}
    if result.structured_content is not None:
        structured = json.dumps(result.structured_content, ensure_ascii=False, default=str)
        if len(structured) <= limit:
            data["result"] = result.structured_content  # the text block is its serialisation (MCP says SHOULD)
        elif not text:
            text = structured
    if "result" not in data:
        data["text"] = clip(text, limit)
    if omitted:
        data["omitted"] = [f"{kind} content (not shown)" for kind in omitted]
    return data


class McpToolSource:
    """A tenant's MCP tools as they are now: what its servers list, rebuilt when a listing changes."""

    def __init__(self, tenant_id: str, specs: tuple[McpServerSpec, ...]):
        self.tenant_id, self.specs = tenant_id, specs
        self._lock = threading.Lock()
        self._built: dict[str, tuple[int, list[McpTool]]] = {}

    def connections(self) -> list[Connection]:
        """The tenant's connections, started on first use (idempotent)."""
        return [hub().connection(self.tenant_id, spec) for spec in self.specs]

    def tools(self) -> list[McpTool]:
        """The tools of the servers `connections` started (none before: reading the registry, as `wabot check`
        does, never starts a server)."""
        out: list[McpTool] = []
        for spec in self.specs:
            conn = hub().started(self.tenant_id, spec)
            if conn is not None:
                out += self._tools_of(conn)
        return out

    def _tools_of(self, conn: Connection) -> list[McpTool]:
        listed, version = conn.tools, conn.version
        if not listed:
            return []
        with self._lock:
            cached = self._built.get(conn.spec.name)
            if cached is None or cached[0] != version:
                cached = (version, self._build(conn, listed))
                self._built[conn.spec.name] = cached
            return cached[1]

    def _build(self, conn: Connection, listed: tuple[types.Tool, ...]) -> list[McpTool]:
        tools: dict[str, McpTool] = {}
        for item in listed:
            tool = McpTool(conn.spec, conn, item)
            if tool.problem or tool.name in tools:
                log.warning("MCP tool not offered", extra={"tenant_id": self.tenant_id, "mcp_server": conn.spec.name,
                                                           "tool": tool.name,
                                                           "problem": tool.problem or "name used twice"})
                continue
            tools[tool.name] = tool
        return list(tools.values())
