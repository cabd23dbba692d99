"""Tool calls that wait for the user's yes (issue 15).

Which: an MCP tool its server annotates `destructiveHint: true`, and any tool (HTTP or MCP) the tenant lists under
`confirm.tools` (`ToolRegistry.needs_confirmation`). Read-only and other tools run at once.

The flow, and what each step guarantees:
1. the model calls such a tool: its arguments are checked like any call (an invalid call goes back to the model as
   an error, nothing is stored); a valid one is stored as a `pending_actions` row (shared.db.pending_actions) in
   the turn's transaction, so it exists only if the question reaching the user commits with it, and it is NOT run.
   The turn ends with our own words, not the model's: exactly what the tool would do (its description, name and
   every argument) and how to confirm. One question at a time: a newer one cancels an older one;
2. the user's next message resolves it, before any model call of that turn (`resolve`): an explicit yes
   (`is_yes`: "yes", "y", "ok", "confirm", "go ahead", "sí", "ja", "oui", ...; the whole message) before
   `expires_at` runs it; "no" cancels it with our own answer; anything else cancels it and the message is
   answered as usual; a yes after the expiry runs nothing and says so. Silence past the expiry is a cancel: the
   row is never run once `expires_at` has passed;
3. a yes claims the row (`pending` -> `running`) in a transaction of its own that commits BEFORE the tool runs:
   the action runs at most once, even when the turn task is redelivered or two turns race (the conditional UPDATE
   lets one win; the per-user turn lock already keeps them apart). The tool then runs through the registry
   (validated, logged, errors to the model) and its outcome is recorded with the turn. If the worker dies between
   the claim and the turn's commit, the action is not run again: the user's next message (the redelivered yes
   too) is told that it was started and its outcome is unknown (the external system is the judge of that), once:
   the row then ends `unknown`.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from shared.db import pending_actions
from shared.tools.base import ToolContext, ToolResult

if TYPE_CHECKING:  # pragma: no cover
    from shared.tools.registry import ToolRegistry

log = logging.getLogger(__name__)

_YES = re.compile(r"^(yes|y|yeah|yep|yup|sure|ok|okay|confirm|confirmed|go ahead|do it|yes please|please do|"
                  r"sí|si|ja|oui|sim|da|tak|evet|👍|✅)$", re.I)
_NO = re.compile(r"^(no|n|nope|nah|cancel|stop|don'?t|do not|no thanks|no thank you|nein|non|não|nao|ne|❌|👎)$",
                 re.I)
MAX_SUMMARY = 700
WAITING = json.dumps({"status": "waiting_for_user_confirmation",
                      "note": "not run: the user must answer yes first; the bot asks them"})
ONE_AT_A_TIME = json.dumps({"isError": True, "error": "only one action can wait for the user's yes at a time"})

QUESTION = ("Before I do this, please confirm. I'm about to: {summary}\n"
            "Reply YES to go ahead; any other answer cancels it. (This request expires in {minutes} minutes.)")
DECLINED = "OK, I've cancelled it and did nothing: {summary}"
UNKNOWN = ("I started this but was interrupted before I could see how it ended: {summary}. Please check whether it "
           "went through before asking me again.")
EXPIRED = "That request expired, so I did not do it: {summary}. Ask me again if you still want it."
CONFIRMED_NOTE = ("The user confirmed and the action above has now been run; its result follows as data. Tell the "
                  "user the outcome in one or two sentences.")


def _words(text: str) -> str:
    return re.sub(r"[\s.!?,;:]+", " ", text or "").strip()


def is_yes(text: str) -> bool:
    """An explicit yes: the whole message is one of the yes words (punctuation and case aside)."""
    return bool(_YES.match(_words(text)))


def is_no(text: str) -> bool:
    return bool(_NO.match(_words(text)))


def summary_of(name: str, description: str, args: dict[str, Any]) -> str:
    """Exactly what would run: what the tool does, its name and every argument the model gave."""
    shown = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items()) or "no arguments"
    first = description.strip().split("\n")[0].rstrip(". ")
    text = f"{first} ({name} with {shown})"
    return text if len(text) <= MAX_SUMMARY else text[:MAX_SUMMARY - 1] + "…"


def propose(ctx: ToolContext, registry: "ToolRegistry", name: str, raw_arguments: str | None,
            expiry_minutes: int) -> str | ToolResult:
    """Store the call as the user's pending action and return the question for the user; or the error result
    for the model when the call itself is wrong (nothing is stored then)."""
    args, refused = registry.checked_arguments(name, raw_arguments)
    if refused is not None:
        return refused
    tool = registry.get(name)
    summary = summary_of(name, tool.description if tool else name, args)
    now = ctx.clock()
    pending_actions.propose(ctx.conn, ctx.user_id, name, args, summary, now, now + timedelta(minutes=expiry_minutes))
    log.info("tool call waits for the user's yes", extra={"tool": name, "expiry_minutes": expiry_minutes})
    return QUESTION.format(summary=summary, minutes=expiry_minutes)


@dataclass(frozen=True)
class Resolution:
    """How the user's message settled their pending action."""

    outcome: str                       # confirmed | declined | expired | cancelled | interrupted
    action: dict
    reply: str | None = None           # our own answer (no model call); None: the turn goes on to the model
    result: ToolResult | None = None   # confirmed: the tool's result

    def replay(self) -> list[dict[str, Any]]:
        """For a confirmed action: the call and its result as the model's own tool step, then the note."""
        call_id = f"confirmed_{self.action['id']}"
        call = {"id": call_id, "type": "function",
                "function": {"name": self.action["tool"],
                             "arguments": json.dumps(self.action["arguments"], ensure_ascii=False)}}
        return [{"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call_id, "content": self.result.content if self.result else ""},
                {"role": "system", "content": CONFIRMED_NOTE}]


def _outcome(action: dict, text: str, now) -> tuple[str, str]:
    if action["expires_at"] <= now:
        return "expired", "expired"
    if is_yes(text):
        return "confirmed", "running"
    return ("declined" if is_no(text) else "cancelled"), "cancelled"


def resolve(ctx: ToolContext, registry: "ToolRegistry", text: str) -> Resolution | None:
    """Settle the user's pending action with their message `text` (see the module docstring); None when there is
    none (or another turn settled it first)."""
    action = pending_actions.waiting(ctx.conn, ctx.user_id)
    if action is None:
        return None
    if action["status"] == "running":
        return _interrupted(ctx, action)
    now = ctx.clock()
    outcome, status = _outcome(action, text, now)
    # Committed before anything runs: at most once (see the module docstring, step 3).
    if not pending_actions.claim(ctx.tenant.db_dsn, action["id"], status, now):
        return None
    log.info("pending action settled", extra={"tool": action["tool"], "outcome": outcome})
    if outcome == "confirmed":
        result = registry.call(ctx, action["tool"], json.dumps(action["arguments"], ensure_ascii=False))
        pending_actions.finish(ctx.conn, action["id"], "failed" if result.is_error else "done",
                               result.content[:2000], ctx.clock())
        return Resolution(outcome, action, result=result)
    if outcome == "declined":
        return Resolution(outcome, action, reply=DECLINED.format(summary=action["summary"]))
    if outcome == "expired" and is_yes(text):
        return Resolution(outcome, action, reply=EXPIRED.format(summary=action["summary"]))
    return Resolution(outcome, action)


def _interrupted(ctx: ToolContext, action: dict) -> Resolution:
    """A confirmed action whose turn died after the claim: never run again; the user is told its outcome is
    unknown (in this turn's transaction, so a redelivery of this turn says it again rather than never)."""
    pending_actions.finish(ctx.conn, action["id"], "unknown", "interrupted after the claim", ctx.clock())
    log.warning("confirmed action interrupted; outcome unknown", extra={"tool": action["tool"]})
    return Resolution("interrupted", action, reply=UNKNOWN.format(summary=action["summary"]))


def done_reply(resolution: Resolution) -> str:
    """The answer after a confirmed action when the model cannot phrase one: what ran and how it ended."""
    result = resolution.result
    if result is None or result.is_error:
        return f"I tried, but it did not work: {resolution.action['summary']}."
    return f"Done: {resolution.action['summary']}."
