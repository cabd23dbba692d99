"""A primary provider with a fallback: when the primary fails (its deadline passed, an error, an empty answer
twice) or its circuit is open (it failed just now), the fallback answers at once.

The answer says who answered (ChatResult.provider / .model), so usage is booked on the provider that did the
work. Embeddings fail over only when both sides use the same embedding model: vectors of another model live in
another space and would silently poison the tenant's memory search.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Sequence

from shared.llm.base import ChatResult, LLMError, LLMProvider
from shared.llm.breaker import CircuitOpen

log = logging.getLogger(__name__)


class FailoverProvider:
    def __init__(self, primary: LLMProvider, fallback: LLMProvider):
        self.primary, self.fallback = primary, fallback
        self.name = primary.name  # who we mean to talk to; each ChatResult names who did answer
        self.model = primary.model
        self.entry = getattr(primary, "entry", "")
        # Transcription goes to the primary only: the fallback may be a provider without an audio API.
        self.supports_transcription = bool(getattr(primary, "supports_transcription", False))

    def __repr__(self) -> str:
        return f"FailoverProvider({self.primary!r} -> {self.fallback!r})"

    def chat(self, messages: Sequence[dict[str, Any]], *, tools: Sequence[dict[str, Any]] | None = None,
             temperature: float | None = None, tool_choice: Any = None) -> ChatResult:
        try:
            return _named(self.primary.chat(messages, tools=tools, temperature=temperature, tool_choice=tool_choice),
                          self.primary)
        except LLMError as exc:
            report = log.info if isinstance(exc, CircuitOpen) else log.warning  # skipped: said when it opened
            report("LLM primary failed; the fallback answers", extra={
                "llm_provider": self.primary.name, "llm_model": self.primary.model, "error": str(exc),
                "status": exc.status, "fallback_provider": self.fallback.name, "fallback_model": self.fallback.model})
        try:
            result = self.fallback.chat(messages, tools=tools, temperature=temperature, tool_choice=tool_choice)
        except LLMError as exc:
            raise LLMError(f"primary {self.primary.name} and fallback {self.fallback.name} both failed: {exc}",
                           retryable=exc.retryable, status=exc.status, retry_after=exc.retry_after) from None
        return _named(result, self.fallback)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        try:
            return self.primary.embed(texts)
        except LLMError as exc:
            same_space = getattr(self.primary, "embed_model", None) == getattr(self.fallback, "embed_model", None)
            if not same_space:
                raise
            log.warning("LLM primary embeddings failed; the fallback embeds", extra={
                "llm_provider": self.primary.name, "error": str(exc), "fallback_provider": self.fallback.name})
        return self.fallback.embed(texts)

    def transcribe(self, audio: bytes, filename: str, content_type: str) -> str:
        if not self.supports_transcription:
            raise LLMError(f"{self.primary.name} has no transcription API", retryable=False)
        return self.primary.transcribe(audio, filename, content_type)  # type: ignore[attr-defined]


def _named(result: ChatResult, by: LLMProvider) -> ChatResult:
    """The answer labelled with who gave it (providers that do not say get their configured names)."""
    return replace(result, provider=result.provider or by.name, model=result.model or by.model,
                   entry=result.entry or getattr(by, "entry", "") or by.name)
