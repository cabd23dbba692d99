"""Any OpenAI-compatible chat server (OpenAI, DeepSeek, Ollama, vLLM, llama.cpp) through the `openai` SDK.

The SDK already retries connection errors, 408/409/429 and 5xx with backoff; we set its timeout and retry count
and turn what is left into our own LLMError so callers never depend on SDK exception types.
"""
from __future__ import annotations

from typing import Any, Sequence

import openai

from shared.llm.base import ChatResult, LLMError, ToolCall, Usage

PRESET_BASE_URLS = {
    "openai": None,  # the SDK default
    "deepseek": "https://api.deepseek.com",
    "ollama": "http://localhost:11434/v1",
}


class OpenAICompatProvider:
    def __init__(self, *, name: str, model: str, api_key: str, base_url: str | None = None,
                 embed_model: str | None = None, timeout: float = 60.0, max_retries: int = 2):
        self.name = name
        self.model = model
        self.embed_model = embed_model
        self._client = openai.OpenAI(
            api_key=api_key or "not-needed",  # local servers (Ollama) accept any key
            base_url=base_url or PRESET_BASE_URLS.get(name),
            timeout=timeout,
            max_retries=max_retries,
        )

    def chat(self, messages: Sequence[dict[str, Any]], *, tools: Sequence[dict[str, Any]] | None = None,
             temperature: float | None = None) -> ChatResult:
        kwargs: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        if tools:
            kwargs["tools"] = list(tools)
        if temperature is not None:
            kwargs["temperature"] = temperature
        try:
            resp = self._client.chat.completions.create(**kwargs)
        except openai.APIStatusError as exc:
            raise LLMError(f"{self.name} answered HTTP {exc.status_code}",
                           retryable=exc.status_code in (408, 409, 429) or exc.status_code >= 500,
                           status=exc.status_code) from None
        except openai.APIError as exc:  # connection errors and timeouts, after the SDK's retries
            raise LLMError(f"{self.name} unreachable: {exc.__class__.__name__}") from None
        choice = resp.choices[0]
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "{}")
            for c in (choice.message.tool_calls or []) if getattr(c, "function", None)
        )
        usage = Usage(resp.usage.prompt_tokens, resp.usage.completion_tokens) if resp.usage else Usage()
        return ChatResult(content=choice.message.content, tool_calls=calls, usage=usage, model=resp.model or self.model,
                          finish_reason=choice.finish_reason)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not self.embed_model:
            raise LLMError(f"{self.name}: no embedding model configured", retryable=False)
        try:
            resp = self._client.embeddings.create(model=self.embed_model, input=list(texts))
        except openai.APIStatusError as exc:
            raise LLMError(f"{self.name} embeddings answered HTTP {exc.status_code}",
                           retryable=exc.status_code == 429 or exc.status_code >= 500, status=exc.status_code) from None
        except openai.APIError as exc:
            raise LLMError(f"{self.name} embeddings unreachable: {exc.__class__.__name__}") from None
        return [d.embedding for d in sorted(resp.data, key=lambda d: d.index)]
