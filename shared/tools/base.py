"""MCP-style tools: a name, a description, a JSON Schema for the input, annotations, and `invoke`.

The context binds tenant and user on the server side: no argument can name another user, because tools only
ever read `ctx.user_id`, never a user from their arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Mapping

import psycopg

from shared.config.tenants import Tenant

if TYPE_CHECKING:  # pragma: no cover
    from shared.knowledge.store import KnowledgeStore
    from shared.memory.store import MemoryStore


class ToolError(Exception):
    """A failure the model should read and may correct (bad date, unknown item ...): becomes an isError result."""


@dataclass
class ToolContext:
    tenant: Tenant
    conn: psycopg.Connection          # the tenant database, in the turn's transaction
    user_id: int                      # bound by the server, never taken from tool arguments
    user_phone: str
    memory: "MemoryStore"
    clock: Callable[[], datetime]     # aware UTC "now"
    request_id: str | None = None
    knowledge: "KnowledgeStore | None" = None  # the business's documents (search_knowledge)


@dataclass(frozen=True)
class ToolAnnotations:
    """MCP tool annotations: hints for the agent and the operator, never a security boundary."""

    readOnlyHint: bool = False
    destructiveHint: bool = False
    openWorldHint: bool = False       # the tool talks to the world outside our databases (HTTP tools)

    def as_dict(self) -> dict:
        return {"readOnlyHint": self.readOnlyHint, "destructiveHint": self.destructiveHint,
                "openWorldHint": self.openWorldHint}


class Tool:
    """Subclass and set the class attributes; `invoke` returns a JSON-serialisable result or raises ToolError."""

    name: str = ""
    description: str = ""
    input_schema: Mapping[str, Any] = {"type": "object", "properties": {}}
    annotations: ToolAnnotations = ToolAnnotations()
    group: str = "db"                 # agents gate tools by group: "db" (memory, reminders), "http" (tenant APIs),
                                      # "mcp" (the tenant's MCP servers)
    # Run only after the user's explicit yes (shared.tools.confirmation): MCP tools the server annotates
    # destructiveHint: true; any tool the tenant lists under `confirm.tools` (ToolRegistry.needs_confirmation).
    needs_confirmation: bool = False

    @property
    def done_phrase(self) -> str:
        """What it did, for the user when the model cannot say it; tools that act set a better one ("saved it")."""
        return f"used {self.name.replace('_', ' ')}"

    def invoke(self, ctx: ToolContext, args: dict[str, Any]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def openai_schema(self) -> dict:
        """The tool in the OpenAI `tools` format the providers send."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description,
                             "parameters": dict(self.input_schema)}}


@dataclass(frozen=True)
class ToolResult:
    """What goes back to the model (`content`, JSON text) and what we record (`is_error`, `duration_ms`)."""

    tool: str
    content: str
    is_error: bool = False
    duration_ms: int = 0
    data: Any = field(default=None, compare=False)
    # Why it failed, for logs and metrics: unknown_tool | invalid_json | invalid_arguments | tool_error | exception
    error_kind: str | None = None
