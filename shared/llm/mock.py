"""An offline, deterministic provider: the default of `make dev` without a key, and the model of the tests.

It answers in the OpenAI chat format like a real model, so everything around it (context building, usage
accounting, sending) runs exactly as in production.
"""
from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Sequence

from shared.llm.base import ChatResult, Usage

_GREETING = re.compile(r"^\s*(hi|hello|hey|hola|good (morning|afternoon|evening))\b", re.I)


def estimate_tokens(text: str) -> int:
    """About four characters per token: close enough for budgets and usage when the server reports none."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _business_name(messages: Sequence[dict[str, Any]]) -> str:
    for m in messages:
        if m.get("role") == "system":
            found = re.search(r"assistant of ([^.\n]+)", m.get("content") or "")
            if found:
                return found.group(1).strip()
    return "this business"


class MockProvider:
    name = "mock"

    def __init__(self, model: str = "mock-chat", dim: int = 256):
        self.model = model
        self.dim = dim

    def chat(self, messages: Sequence[dict[str, Any]], *, tools: Sequence[dict[str, Any]] | None = None,
             temperature: float | None = None) -> ChatResult:
        last_user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        if _GREETING.match(last_user):
            reply = f"Hello! I'm the assistant of {_business_name(messages)}. How can I help you today?"
        elif not last_user.strip():
            reply = "I'm here. What can I do for you?"
        else:
            reply = f"You said: {last_user.strip()}"
        prompt = sum(estimate_tokens(str(m.get("content") or "")) for m in messages)
        return ChatResult(content=reply, usage=Usage(prompt, estimate_tokens(reply)), model=self.model,
                          finish_reason="stop")

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Hashed bag-of-words vectors: texts that share words are close; stable across processes."""
        out = []
        for text in texts:
            vec = [0.0] * self.dim
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
                vec[h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            out.append([v / norm for v in vec])
        return out
