"""The memory tools the model may call: save/update an item, search memory, list events, delete an item.

They act only on `ctx.user_id` (bound by the server): an id that belongs to another user, or to tenant-wide
knowledge, is "no such item" and nothing changes. Times the model writes without an offset are in the tenant's
time zone, and every time in a result is ISO 8601 in that zone.

When the embedding service fails (down, a wrong dimension, an unusable answer), the tools still work and say so in
a `note`: a search answers from full-text search, and a saved item is stored without its embedding (found by
full-text search now, embedded later by `MemoryStore.backfill_embeddings`).
"""
from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from shared.memory.store import MemoryHit, NewItem
from shared.tools.base import Tool, ToolAnnotations, ToolContext, ToolError

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ITEM_KINDS = ("note", "event", "task")


def _validate(tool: Tool, args: Any) -> dict:
    """Check arguments against the tool's JSON Schema; the first error becomes a ToolError the model can fix."""
    if not isinstance(args, dict):
        raise ToolError("arguments must be a JSON object")
    error = best_match(Draft202012Validator(tool.input_schema).iter_errors(args))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise ToolError(f"invalid arguments{f' at {where}' if where else ''}: {error.message}")
    return args


def parse_when(value: str, tz: tzinfo, field: str) -> tuple[datetime, bool]:
    """An ISO 8601 date or date-time as an aware datetime (no offset: in `tz`); and whether it was a date alone."""
    text = value.strip()
    try:
        if _DATE_ONLY.match(text):
            return datetime.combine(date.fromisoformat(text), time(0, 0), tz), True
        when = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ToolError(f"{field} must be an ISO 8601 date or date-time such as 2026-11-27 or "
                        f"2026-11-27T15:30, not {value[:40]!r}") from None
    return (when.replace(tzinfo=tz) if when.utcoffset() is None else when), False


def week_of(now: datetime, tz: tzinfo) -> tuple[datetime, datetime]:
    """This week in `tz`: Monday 00:00 to next Monday 00:00 (wall-clock midnights, so DST weeks are right)."""
    local = now.astimezone(tz).date()
    monday = local - timedelta(days=local.weekday())
    return (datetime.combine(monday, time(0, 0), tz), datetime.combine(monday + timedelta(days=7), time(0, 0), tz))


def semantic_note(why: str, saved: bool) -> str:
    """What the model is told when the embedding service failed (`why` is secret-free: MemoryStore.problem)."""
    if saved:
        return (f"Saved, but without its semantic-search embedding because the embedding service failed ({why}); "
                f"word search finds it now and it is embedded when the service is back.")
    return (f"Semantic search is unavailable right now ({why}); these results come from word (full-text) search, "
            f"so also try other words the user may have used.")


def _item_json(hit: MemoryHit, tz: tzinfo) -> dict:
    data = hit.as_json(tz)
    data.pop("score")
    return data


class UpsertItem(Tool):
    name = "upsert_item"
    done_phrase = "I saved it"
    description = ("Save the user's note, event or task, or change one by id. Events need starts_at; times "
                   "without an offset are local.")
    input_schema = {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1, "description": "item to change; omit to create"},
            "kind": {"type": "string", "enum": list(ITEM_KINDS)},
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "content": {"type": "string", "maxLength": 4000, "description": "details"},
            "starts_at": {"type": "string", "minLength": 10, "maxLength": 40,
                          "description": "ISO 8601, e.g. 2026-11-27T15:30"},
        },
        "required": ["kind", "title"],
        "additionalProperties": False,
    }
    annotations = ToolAnnotations()

    def invoke(self, ctx: ToolContext, args: dict[str, Any]) -> Any:
        args = _validate(self, args)
        tz = ctx.tenant.config.tz
        fields: dict[str, Any] = {"kind": args["kind"], "title": args["title"].strip()}
        if "content" in args:
            fields["content"] = args["content"]
        if "starts_at" in args:
            fields["starts_at"] = parse_when(args["starts_at"], tz, "starts_at")[0]
        if not fields["title"]:
            raise ToolError("title must not be empty")
        why = None
        try:
            if "id" in args:
                existing = ctx.memory.get(ctx.conn, ctx.user_id, args["id"])
                if existing is None:
                    raise ToolError("no such item")
                if fields["kind"] == "event" and fields.get("starts_at", existing.starts_at) is None:
                    raise ToolError("an event needs starts_at")
                updated, why = ctx.memory.update_or_defer(ctx.conn, ctx.user_id, args["id"], **fields)
                if not updated:
                    raise ToolError("no such item")
                item_id, created = args["id"], False
            else:
                if fields["kind"] == "event" and "starts_at" not in fields:
                    raise ToolError("an event needs starts_at")
                item = NewItem(kind=fields["kind"], title=fields["title"], content=fields.get("content", ""),
                               starts_at=fields.get("starts_at"), metadata={"source": "tool"})
                ids, why = ctx.memory.add_or_defer(ctx.conn, ctx.user_id, [item])
                item_id, created = ids[0], True
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        hit = ctx.memory.get(ctx.conn, ctx.user_id, item_id)
        result = {"id": item_id, "created": created, "item": _item_json(hit, tz)}
        if why:
            result["note"] = semantic_note(why, saved=True)
        return result


class SearchMemory(Tool):
    name = "search_memory"
    description = "Search the user's saved items and memories, and the business's knowledge."
    input_schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 500},
            "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    annotations = ToolAnnotations(readOnlyHint=True)

    def invoke(self, ctx: ToolContext, args: dict[str, Any]) -> Any:
        args = _validate(self, args)
        try:  # the search tool's floors: unrelated items are noise to the model
            found = ctx.memory.search_or_fulltext(ctx.conn, ctx.user_id, args["query"], limit=args.get("limit", 5))
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        tz = ctx.tenant.config.tz
        result: dict[str, Any] = {"count": len(found.hits), "results": [h.as_json(tz) for h in found.hits]}
        if found.semantic_unavailable:
            result["note"] = semantic_note(found.semantic_unavailable, saved=False)
        return result


class ListEvents(Tool):
    name = "list_events"
    description = ("List the user's events from start to end (excluded), local dates or date-times; one day: "
                   "start=end. Default: this week.")
    input_schema = {
        "type": "object",
        "properties": {
            "start": {"type": "string", "minLength": 10, "maxLength": 40, "description": "e.g. 2026-11-23"},
            "end": {"type": "string", "minLength": 10, "maxLength": 40, "description": "excluded, e.g. 2026-11-30"},
        },
        "additionalProperties": False,
    }
    annotations = ToolAnnotations(readOnlyHint=True)

    def invoke(self, ctx: ToolContext, args: dict[str, Any]) -> Any:
        args = _validate(self, args)
        tz = ctx.tenant.config.tz
        start, end = week_of(ctx.clock(), tz)
        if "start" in args:
            start, _ = parse_when(args["start"], tz, "start")
        if "end" in args:
            end, end_is_date = parse_when(args["end"], tz, "end")
            if end_is_date and "start" in args and end <= start and end.date() == start.date():
                end = datetime.combine(end.date() + timedelta(days=1), time(0, 0), tz)  # one day: start=end=date
        if "start" in args and "end" not in args:
            end = start + timedelta(days=7)
        elif "end" in args and "start" not in args:
            start = end - timedelta(days=7)
        if not start < end:
            raise ToolError("start must be before end")
        events = ctx.memory.list_events(ctx.conn, ctx.user_id, start, end)
        return {"start": start.astimezone(tz).isoformat(), "end": end.astimezone(tz).isoformat(),
                "count": len(events), "events": [_item_json(e, tz) for e in events]}


class DeleteItem(Tool):
    name = "delete_item"
    done_phrase = "I deleted it"
    description = "Delete a saved item by id."
    input_schema = {
        "type": "object",
        "properties": {"id": {"type": "integer", "minimum": 1}},
        "required": ["id"],
        "additionalProperties": False,
    }
    annotations = ToolAnnotations(destructiveHint=True)

    def invoke(self, ctx: ToolContext, args: dict[str, Any]) -> Any:
        args = _validate(self, args)
        if not ctx.memory.delete(ctx.conn, ctx.user_id, args["id"]):
            raise ToolError("no such item")
        return {"deleted": args["id"]}


MEMORY_TOOLS: list[Tool] = [UpsertItem(), SearchMemory(), ListEvents(), DeleteItem()]
