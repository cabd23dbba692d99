"""The provider interface. Messages and tool schemas use the OpenAI chat format, the lingua franca of providers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence


class LLMError(Exception):
    """A provider call failed after its retries. `retryable` says whether trying again later may help; `outage`
    that the server did not answer usefully (timeout, connection, 5xx): what trips the circuit breaker;
    `retry_after` (seconds) when the failure knows how long to wait."""

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None, outage: bool = False,
                 retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.outage = outage
        self.retry_after = retry_after


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, exactly as the model wrote it (it may be invalid)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # of prompt_tokens, those the provider served from its prompt cache (billed less)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                     self.cached_prompt_tokens + other.cached_prompt_tokens)


@dataclass(frozen=True)
class ChatResult:
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    model: str = ""  # the model that actually answered (the fallback's, when the fallback answered)
    finish_reason: str | None = None
    provider: str = ""  # the provider that actually answered ('' from providers that do not say: use their .name)
    entry: str = ""     # the configured entry that answered (tenants.yaml `name`, an llm_providers row): usage rows
                        # tell a fallback from the primary even when both are `openai`


def answered_entry(result: ChatResult, llm: "LLMProvider") -> str:
    return result.entry or getattr(llm, "entry", "") or ""


def answered_by(result: ChatResult, llm: "LLMProvider") -> tuple[str, str]:
    """(provider, model) of the answer, for usage accounting: a fallback may have answered instead of `llm`."""
    return result.provider or llm.name, result.model or llm.model


class LLMProvider(Protocol):
    """What the conversation engine needs from a model provider."""

    name: str
    model: str

    def chat(self, messages: Sequence[dict[str, Any]], *, tools: Sequence[dict[str, Any]] | None = None,
             temperature: float | None = None, tool_choice: Any = None) -> ChatResult: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...
