"""The tool-calling loop shared by the agents: model -> tool calls -> results -> model, at most `max_steps` calls.

Tool failures and invalid arguments come back to the model as error results (it may correct itself); when the
step budget runs out, one last call without tools asks for a plain answer, so the user always gets a reply.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from shared.agents.base import AgentRequest, AgentResponse, LLMCall
from shared.conversation.prompt import fit_messages
from shared.llm.base import answered_by
from shared.conversation.tokens import prompt_budget

log = logging.getLogger(__name__)

GIVE_UP = "Sorry, I couldn't finish that just now. Could you try again, maybe in simpler words?"


def _call(request: AgentRequest, messages: list[dict[str, Any]], tools: list[dict] | None, purpose: str):
    started = time.monotonic()
    # Tool calls and results grow the prompt step by step: each call is fitted to the tenant's budget again.
    messages = fit_messages(messages, prompt_budget(request.tenant.config.max_context_tokens, tools))
    result = request.llm.chat(messages, tools=tools or None)
    latency = int((time.monotonic() - started) * 1000)
    provider, model = answered_by(result, request.llm)
    return result, LLMCall(provider, model, result.usage.prompt_tokens,
                           result.usage.completion_tokens, latency, tuple(c.name for c in result.tool_calls), purpose)


def run_tool_loop(request: AgentRequest, agent: str, tool_names: list[str]) -> AgentResponse:
    messages = list(request.messages)
    schemas = request.registry.openai_schemas(tool_names) if tool_names else []
    response = AgentResponse(text="", agent=agent, tools_offered=list(tool_names), calls=request.calls)
    for step in range(max(1, request.max_steps)):
        if step and request.deadline is not None and time.monotonic() > request.deadline:
            break  # the turn has run long enough (thread pools do not enforce Celery's time limits)
        result, call = _call(request, messages, schemas, "chat")
        response.calls.append(call)
        response.steps += 1
        if not result.tool_calls:
            response.text = (result.content or "").strip()
            return response
        messages.append({"role": "assistant", "content": result.content or "",
                         "tool_calls": [{"id": c.id, "type": "function",
                                         "function": {"name": c.name, "arguments": c.arguments}}
                                        for c in result.tool_calls]})
        for c in result.tool_calls:
            if c.name not in tool_names:  # a tool the model was not offered: refuse, do not run it
                content = '{"isError": true, "error": "tool %s is not available here"}' % c.name
            else:
                outcome = request.registry.call(request.tool_ctx, c.name, c.arguments)
                content = outcome.content
                response.tools_used.append(c.name)
            messages.append({"role": "tool", "tool_call_id": c.id, "content": content})
    # Out of steps: one call without tools for a plain answer.
    response.stopped_early = True
    log.warning("tool loop stopped at the step limit", extra={"steps": response.steps, "agent": agent})
    messages.append({"role": "system", "content": "Stop using tools now and answer the user with what you have."})
    try:
        result, call = _call(request, messages, None, "final")
        response.calls.append(call)
        response.text = (result.content or "").strip() or GIVE_UP
    except Exception:
        log.exception("final answer failed")
        response.text = GIVE_UP
    return response


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
        return run_tool_loop(request, self.name, self.tool_names(request.registry))
