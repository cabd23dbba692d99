"""The provider interface. Messages and tool schemas use the OpenAI chat format, the lingua franca of providers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence


class LLMError(Exception):
    """A provider call failed after its retries. `retryable` says whether trying again later may help."""

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, exactly as the model wrote it (it may be invalid)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatResult:
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    model: str = ""  # the model that actually answered (the fallback's, when the fallback answered)
    finish_reason: str | None = None
    provider: str = ""  # the provider that actually answered ('' from providers that do not say: use their .name)


def answered_by(result: ChatResult, llm: "LLMProvider") -> tuple[str, str]:
    """(provider, model) of the answer, for usage accounting: a fallback may have answered instead of `llm`."""
    return result.provider or llm.name, result.model or llm.model


class LLMProvider(Protocol):
    """What the conversation engine needs from a model provider."""

    name: str
    model: str

    def chat(self, messages: Sequence[dict[str, Any]], *, tools: Sequence[dict[str, Any]] | None = None,
             temperature: float | None = None) -> ChatResult: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...
