"""Prefetched reads (issue 17): a read the rules are sure of runs before the first model call, so the model answers
in one call instead of asking for the read and answering in a second call that re-sends the whole prompt.

When is a read prefetched: the tenant's `prefetch_reads` is on, the intent rules (not similarity, not the model)
said "db", and `shared.agents.intent.read_kinds` is sure the message asks to read the user's events, reminders or
earlier notes and asks for nothing to change. The tool must be offered this turn, annotated read-only, not open to
the world (HTTP and MCP tools never are prefetched: their arguments, such as a city, are the model's to choose),
and not waiting for a yes. Its arguments come from the message alone, never invented:

- list_events: the dates the message names ("today", "tomorrow", a weekday, "this week", "next week",
  "this weekend"), else the coming 7 days; local dates in the tenant's zone, from the turn's `now`;
- list_reminders: no arguments;
- search_memory: what the question is about ("what did I tell you about my car?" -> "my car").

Each runs through `ToolRegistry.call` like a model's call (validation, savepoint, the log line, the tool-call
metric); its result goes into the turn's context (shared.conversation.prompt: after the history, so the cacheable
prefix is unchanged), marked as data, at most `limit` characters, and the turn's `tools_used` names it. The tools
stay offered: the model may still read again with other arguments, or call another tool.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Sequence

from shared.agents.base import Intent
from shared.agents.intent import memory_topic, read_kinds
from shared.llm.timephrases import parse_day
from shared.tools.registry import MAX_RESULT_CHARS, cap_content

if TYPE_CHECKING:  # pragma: no cover
    from shared.tools.base import ToolContext
    from shared.tools.registry import ToolRegistry

TOOLS = {"events": "list_events", "reminders": "list_reminders", "memory": "search_memory"}
MIN_CHARS = 600  # a result cut shorter than this tells the model too little; it is then not worth its tokens


@dataclass(frozen=True)
class Read:
    """One read to run: the tool and its arguments (a JSON object)."""

    tool: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Prefetched:
    """A read that ran: its arguments as JSON text, the result as the model sees it (capped), whether it failed."""

    tool: str
    arguments: str
    content: str
    is_error: bool = False


def event_range(text: str, today: date) -> tuple[date, date]:
    """The local dates [start, end) a question about the schedule names; the coming 7 days when it names none."""
    low = text.lower()
    if "next week" in low:
        monday = today - timedelta(days=today.weekday()) + timedelta(days=7)
        return monday, monday + timedelta(days=7)
    if "this week" in low:
        monday = today - timedelta(days=today.weekday())
        return monday, monday + timedelta(days=7)
    if "weekend" in low:
        saturday = today + timedelta(days=(5 - today.weekday()) % 7)
        return saturday, saturday + timedelta(days=2)
    day = parse_day(text, today)
    if day is not None:
        return day, day + timedelta(days=1)
    return today, today + timedelta(days=7)


def _arguments(kind: str, text: str, now: datetime, ctx: "ToolContext") -> dict[str, Any]:
    if kind == "events":
        start, end = event_range(text, now.astimezone(ctx.tenant.config.tz).date())
        return {"start": start.isoformat(), "end": end.isoformat()}
    if kind == "memory":
        return {"query": memory_topic(text)[:500]}
    return {}


def _prefetchable(registry: "ToolRegistry", name: str, offered: Sequence[str]) -> bool:
    tool = registry.get(name)
    return (tool is not None and name in offered and tool.group == "db" and tool.annotations.readOnlyHint
            and not tool.annotations.openWorldHint and not registry.needs_confirmation(name))


def plan(ctx: "ToolContext", registry: "ToolRegistry", text: str, intent: Intent, offered: Sequence[str],
         now: datetime) -> list[Read]:
    """The reads to run before the model is asked (none unless the rules are sure; see the module docstring)."""
    if not ctx.tenant.config.prefetch_reads or intent.name != "db" or intent.source != "rules":
        return []
    return [Read(TOOLS[kind], _arguments(kind, text, now, ctx)) for kind in read_kinds(text)
            if _prefetchable(registry, TOOLS[kind], offered)]


def run(ctx: "ToolContext", registry: "ToolRegistry", reads: Sequence[Read], limit: int) -> list[Prefetched]:
    """Each read through the registry's one call path; results within `limit` characters each (valid JSON)."""
    limit = min(MAX_RESULT_CHARS, max(MIN_CHARS, limit))
    done = []
    for read in reads:
        arguments = json.dumps(read.arguments, ensure_ascii=False)
        outcome = registry.call(ctx, read.tool, arguments)
        done.append(Prefetched(read.tool, arguments, cap_content(outcome.content, limit, outcome.is_error),
                               outcome.is_error))
    return done
