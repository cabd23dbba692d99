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
