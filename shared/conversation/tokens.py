"""Token estimates for budgeting prompts before they are sent.

An estimate is enough to keep prompts under a budget; what is billed is what the server reports in `usage`,
and that is what `llm_usage` records. (Exact tokenisers are model-specific and tiktoken downloads its tables at
run time, which an offline deployment cannot do.)
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable

MESSAGE_OVERHEAD = 4  # role and separators per chat message


def estimate_text(text: str | None) -> int:
    return math.ceil(len(text) / 4) if text else 0


def estimate_message(message: dict[str, Any]) -> int:
    tokens = MESSAGE_OVERHEAD + estimate_text(message.get("content") if isinstance(message.get("content"), str)
                                              else json.dumps(message.get("content") or ""))
    for call in message.get("tool_calls") or []:
        tokens += estimate_text(json.dumps(call))
    return tokens


def estimate_messages(messages: Iterable[dict[str, Any]]) -> int:
    return sum(estimate_message(m) for m in messages)


def estimate_tools(tools: Iterable[dict[str, Any]] | None) -> int:
    return sum(estimate_text(json.dumps(t)) for t in tools or [])


MIN_CLIP_TOKENS = 24  # a clipped text keeps at least this much, so the marker never eats the whole text


def clip_text(text: str, max_tokens: int) -> str:
    """`text` cut to at most `max_tokens` (by `estimate_text`), keeping its beginning and its end (a question sits
    at one or the other; a burst's newest words are at the end), with a marker in between that tells the model
    (and whoever reads the prompt) how much was left out. Shorter texts come back unchanged."""
    limit = max(MIN_CLIP_TOKENS, max_tokens) * 4
    if len(text) <= limit:
        return text
    marker = f" […shortened from {len(text)} characters…] "
    keep = max(0, limit - len(marker))
    head = keep // 2
    return text[:head] + marker + text[len(text) - (keep - head):]


def prompt_budget(max_context_tokens: int, tools: Iterable[dict[str, Any]] | None) -> int:
    """Tokens left for messages once the offered tool schemas are counted (they are sent on every call too).
    A quarter of the budget is always left, so a tenant with many tools still has room for the user's words."""
    return max(max_context_tokens - estimate_tools(tools), max_context_tokens // 4)
