"""Reminder tools: set, list and cancel the current user's reminders (table `reminders`, sent by celery beat).

Every statement runs on `ctx.conn` inside the caller's transaction (nothing here commits) and is scoped to
`ctx.user_id`, so a user can neither see nor cancel another user's reminders. Times the model writes without an
offset are wall-clock times in the tenant's timezone; times we return are ISO 8601 in that timezone.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from shared.db import reminders
from shared.tools.base import Tool, ToolAnnotations, ToolContext, ToolError

MAX_TEXT = 1000
MAX_LISTED = 50
_HAS_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def local_iso(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).isoformat(timespec="minutes" if moment.second == 0 else "seconds")


def parse_due_at(text: str, tz: ZoneInfo) -> datetime:
    """An aware datetime from ISO 8601; without an offset it is a wall-clock time in `tz`."""
    text = text.strip()
    if not _HAS_TIME.match(text):
        raise ToolError("due_at must be an ISO 8601 date and time, e.g. 2026-07-01T15:30 (tenant time) "
                        "or 2026-07-01T15:30+01:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ToolError(f"due_at {text!r} is not a valid ISO 8601 date and time") from None
    if moment.tzinfo is not None:
        return moment
    local = moment.replace(tzinfo=tz)
    # A wall-clock time skipped by a daylight-saving change does not round-trip: ask for another time.
    if local.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) != moment:
        raise ToolError(f"{text} does not exist in {tz.key} (the clocks change then); choose another time")
    return local


def _reminder(row: dict, tz: ZoneInfo) -> dict[str, Any]:
    return {"id": row["id"], "text": row["text"], "due_at": local_iso(row["due_at"], tz), "status": row["status"]}


class SetReminder(Tool):
    name = "set_reminder"
    done_phrase = "I set the reminder"
    description = "Schedule a WhatsApp reminder; due_at is ISO 8601, local time without an offset."
    input_schema = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT,
                     "description": "what to remind of"},
            "due_at": {"type": "string", "description": "e.g. 2026-07-01T15:30"},
        },
        "required": ["text", "due_at"],
        "additionalProperties": False,
    }
    annotations = ToolAnnotations()

    def invoke(self, ctx: ToolContext, args: dict[str, Any]) -> Any:
        tz = ctx.tenant.config.tz
        text = args["text"].strip()
        if not text:
            raise ToolError("text must not be blank")
        due = parse_due_at(args["due_at"], tz)
        now = ctx.clock()
        if due <= now:
            raise ToolError(f"due_at {local_iso(due, tz)} is in the past; it is now {local_iso(now, tz)} "
                            f"({tz.key}). Choose a later time.")
        row = reminders.insert(ctx.conn, ctx.user_id, text, due)
        return {**_reminder(row, tz), "timezone": tz.key}


class ListReminders(Tool):
    name = "list_reminders"
    description = "List the user's pending reminders with their ids."
    input_schema = {"type": "object", "properties": {}, "additionalProperties": False}
    annotations = ToolAnnotations(readOnlyHint=True)

    def invoke(self, ctx: ToolContext, args: dict[str, Any]) -> Any:
        tz = ctx.tenant.config.tz
        rows = reminders.list_pending(ctx.conn, ctx.user_id, MAX_LISTED)
        return {"reminders": [_reminder(r, tz) for r in rows], "timezone": tz.key}


class CancelReminder(Tool):
    name = "cancel_reminder"
    done_phrase = "I cancelled the reminder"
    description = "Cancel a pending reminder by id."
    input_schema = {
        "type": "object",
        "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1,
                              "description": "The reminder's id"}},
        "required": ["id"],
        "additionalProperties": False,
    }
    annotations = ToolAnnotations(destructiveHint=True)

    def invoke(self, ctx: ToolContext, args: dict[str, Any]) -> Any:
        row = reminders.cancel(ctx.conn, args["id"], ctx.user_id)  # only the user's own row, only while pending
        if row is None:
            raise ToolError(f"no such reminder: {args['id']} (use list_reminders to see the pending ones)")
        return _reminder(row, ctx.tenant.config.tz)


REMINDER_TOOLS: list[Tool] = [SetReminder(), ListReminders(), CancelReminder()]
