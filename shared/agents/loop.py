"""The tool-calling loop shared by the agents: model -> tool calls -> results -> model, at most `max_steps` calls.

Tool failures and invalid arguments come back to the model as error results (it may correct itself); when the
step budget runs out, one last call without tools asks for a plain answer, so the user always gets a reply.
When a tool has already acted (saved, set, deleted, called an API) and the model then fails to answer, the user
is told what was done rather than an apology: the action commits with the reply, so the words must match it.
A step whose calls all change something and all succeed ends the turn with the text the model wrote alongside
them, if it wrote one (the prompt asks it to): a saved note or a set reminder costs one model call, not two.
A call of a tool that needs the user's yes (shared.tools.confirmation) is not run: it is stored as the user's
pending action and the turn ends with our question, word for word (the model does not get to rephrase it).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from shared.agents.base import AgentRequest, AgentResponse, LLMCall
from shared.conversation.prompt import fit_messages
from shared.llm.base import LLMError, answered_by, answered_entry
from shared.conversation.tokens import counter_for, prompt_budget
from shared.tools import confirmation

log = logging.getLogger(__name__)

GIVE_UP = "Sorry, I couldn't finish that just now. Could you try again, maybe in simpler words?"


def done_text(request: AgentRequest, acted: list[str]) -> str:
    """What the user is told when the model cannot put it into words after tools acted: each action's phrase."""
    tools = [request.registry.get(name) for name in acted]
    phrases = list(dict.fromkeys(t.done_phrase if t is not None else f"used {n.replace('_', ' ')}"
                                 for n, t in zip(acted, tools)))
    return "Done: " + "; ".join(phrases) + ". (I couldn't write a fuller answer just now.)"


def _call(request: AgentRequest, messages: list[dict[str, Any]], tools: list[dict] | None, purpose: str):
    started = time.monotonic()
    # Tool calls and results grow the prompt step by step: each call is fitted to the tenant's budget again.
    count = counter_for(request.tenant.llm.model_chat)  # the model's tokeniser where we have it
    messages = fit_messages(messages, prompt_budget(request.tenant.config.max_context_tokens, tools, count), count)
    result = request.llm.chat(messages, tools=tools or None)
    latency = int((time.monotonic() - started) * 1000)
    provider, model = answered_by(result, request.llm)
    return result, LLMCall(provider, model, result.usage.prompt_tokens, result.usage.completion_tokens, latency,
                           tuple(c.name for c in result.tool_calls), purpose, answered_entry(result, request.llm),
                           cached_prompt_tokens=result.usage.cached_prompt_tokens)


def run_tool_loop(request: AgentRequest, agent: str, tool_names: list[str]) -> AgentResponse:
    messages = list(request.messages)
    schemas = request.registry.openai_schemas(tool_names) if tool_names else []
    response = AgentResponse(text="", agent=agent, tools_offered=list(tool_names), calls=request.calls)
    acted: list[str] = []   # tools that changed something, successfully
    for step in range(max(1, request.max_steps)):
        if step and request.deadline is not None and time.monotonic() > request.deadline:
            break  # the turn has run long enough (thread pools do not enforce Celery's time limits)
        try:
            result, call = _call(request, messages, schemas, "chat")
        except LLMError:
            if not acted:
                raise  # nothing done yet: the turn fails and is retried, or the user gets the apology
            log.warning("model failed after tools acted; the user is told what was done", exc_info=True)
            response.text = done_text(request, acted)
            return response
        response.calls.append(call)
        response.steps += 1
        if not result.tool_calls:
            response.text = (result.content or "").strip()
            if not response.text:  # providers retry empty answers once themselves; still nothing is a failure
                if not acted:
                    raise LLMError(f"{call.entry or call.provider} answered nothing", retryable=False)
                response.text = done_text(request, acted)
            return response
        messages.append({"role": "assistant", "content": result.content or "",
                         "tool_calls": [{"id": c.id, "type": "function",
                                         "function": {"name": c.name, "arguments": c.arguments}}
                                        for c in result.tool_calls]})
        before = len(acted)
        question = _run_calls(request, result.tool_calls, tool_names, messages, response, acted)
        if question is not None:
            response.text, response.awaiting_confirmation = question, True
            return response
        if (result.content or "").strip() and len(acted) - before == len(result.tool_calls):
            # The model wrote its reply with the calls (prompt.WRITE_ACK_RULE) and every call was a write that
            # succeeded: that reply stands, no second model call. A failed or read-only call is read first.
            response.text = result.content.strip()
            return response
    # Out of steps: one call without tools for a plain answer.
    response.stopped_early = True
    log.warning("tool loop stopped at the step limit", extra={"steps": response.steps, "agent": agent})
    messages.append({"role": "system", "content": "Stop using tools now and answer the user with what you have."})
    try:
        result, call = _call(request, messages, None, "final")
        response.calls.append(call)
        response.text = (result.content or "").strip() or (done_text(request, acted) if acted else GIVE_UP)
    except Exception:
        log.exception("final answer failed")
        response.text = done_text(request, acted) if acted else GIVE_UP
    return response


def _run_calls(request: AgentRequest, tool_calls: list, tool_names: list[str], messages: list[dict[str, Any]],
               response: AgentResponse, acted: list[str]) -> str | None:
    """Run one step's tool calls, appending each result for the model; the question for the user when a call
    has to wait for their yes (the first such call waits; later ones of the step are refused)."""
    question: str | None = None
    registry = request.registry
    for c in tool_calls:
        if c.name not in tool_names:  # a tool the model was not offered: refuse, do not run it
            content = '{"isError": true, "error": "tool %s is not available here"}' % c.name
        elif registry.needs_confirmation(c.name):
            if question is not None:
                content = confirmation.ONE_AT_A_TIME
            else:
                asked = confirmation.propose(request.tool_ctx, registry, c.name, c.arguments,
                                             request.tenant.confirm.expiry_minutes)
                question = asked if isinstance(asked, str) else None
                content = confirmation.WAITING if question is not None else asked.content
        else:
            outcome = registry.call(request.tool_ctx, c.name, c.arguments)
            content = outcome.content
            response.tools_used.append(c.name)
            tool = registry.get(c.name)
            if not outcome.is_error and not (tool is not None and tool.annotations.readOnlyHint):
                acted.append(c.name)
        messages.append({"role": "tool", "tool_call_id": c.id, "content": content})
    return question


class ToolGroupAgent:
    """A specialised agent that answers with the tools of one registry group, for the intents it lists."""

    name = ""
    group = ""
    intents: frozenset[str] = frozenset()
    allowed_tenants: frozenset[str] | None = None  # None: every tenant may enable it

    def can_handle(self, intent: str) -> bool:
        return intent in self.intents

    def tool_names(self, registry) -> list[str]:
        return registry.names(group=self.group)

    def handle(self, request: AgentRequest) -> AgentResponse:
        offered = request.offered if request.offered is not None else self.tool_names(request.registry)
        return run_tool_loop(request, self.name, list(offered))
