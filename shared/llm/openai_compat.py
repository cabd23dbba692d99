"""Any OpenAI-compatible chat server (OpenAI, DeepSeek, Ollama, vLLM, llama.cpp) through the `openai` SDK.

The SDK retries connection errors, 408/409/429 and 5xx with backoff (`max_retries`); we set its timeout and retry
count and turn what is left into our own LLMError, so callers never depend on SDK exception types. With several
API keys, a key answering 401 or 429 is set aside (shared.llm.keys) and the same call is sent at once with the
next key. Error messages carry the provider, the HTTP status and key indexes, never the server's error text (an
OpenAI 401 quotes part of the key) and never a key.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence, TypeVar

import openai

from shared.llm.base import ChatResult, LLMError, ToolCall, Usage
from shared.llm.keys import KeyRing

log = logging.getLogger(__name__)
T = TypeVar("T")


class Preset:
    """What a named provider defaults to; any preset's URL can be replaced with `base_url`."""

    def __init__(self, base_url: str | None, chat_model: str, has_embeddings: bool = True):
        self.base_url, self.chat_model, self.has_embeddings = base_url, chat_model, has_embeddings


PRESETS = {
    "openai": Preset(None, "gpt-4o-mini"),  # None: the SDK's default (https://api.openai.com/v1 or OPENAI_BASE_URL)
    "deepseek": Preset("https://api.deepseek.com", "deepseek-chat", has_embeddings=False),
    "ollama": Preset("http://localhost:11434/v1", "llama3.1"),
}
PRESET_BASE_URLS = {name: p.base_url for name, p in PRESETS.items()}  # kept for older callers


class _Client(openai.OpenAI):
    """The SDK client, except that a 429 comes straight back to us when another key could answer at once.

    Relies on the SDK's `_should_retry` hook; should a future SDK drop it, the SDK simply backs off first.
    """

    rotate_on_429 = False

    def _should_retry(self, response) -> bool:  # type: ignore[override]
        if response.status_code == 429 and self.rotate_on_429:
            return False
        return super()._should_retry(response)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers if exc.response is not None else {}
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(headers[header]) / divisor
        except (KeyError, TypeError, ValueError):
            continue
    return None


class OpenAICompatProvider:
    def __init__(self, *, name: str, model: str | None = None, api_key: str | None = None,
                 api_keys: Sequence[str] = (), base_url: str | None = None, embed_model: str | None = None,
                 timeout: float = 60.0, max_retries: int = 2, rate_limit_cooldown: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, transcription_model: str = "whisper-1"):
        preset = PRESETS.get(name)
        self.name = name
        self.model = model or (preset.chat_model if preset else "")
        if not self.model:
            raise LLMError(f"{name}: no chat model configured", retryable=False)
        self.embed_model = embed_model
        self.base_url = base_url or (preset.base_url if preset else None)
        if preset is None and not self.base_url:
            raise LLMError(f"{name}: not a known provider ({', '.join(PRESETS)}); give it a base_url",
                           retryable=False)
        self.has_embeddings = preset.has_embeddings if preset else True  # DeepSeek has none, whatever the URL
        # Only OpenAI (or a server configured as provider `openai`) has /audio/transcriptions: DeepSeek and
        # Ollama answer 404, so a voice note there would cost a failed upload every time.
        self.supports_transcription = name == "openai"
        self.transcription_model = transcription_model
        keys = tuple(k for k in (*([api_key] if api_key else []), *api_keys) if k)
        keys = tuple(dict.fromkeys(keys))
        self._keys = KeyRing(keys, label=name, rate_limit_cooldown=rate_limit_cooldown, clock=clock)
        self._clients = []
        for key in keys or ("not-needed",):  # local servers (Ollama) accept any key
            client = _Client(api_key=key, base_url=self.base_url, timeout=timeout, max_retries=max_retries)
            client.rotate_on_429 = len(keys) > 1
            self._clients.append(client)

    def __repr__(self) -> str:
        return f"OpenAICompatProvider(name={self.name!r}, model={self.model!r}, base_url={self.base_url!r})"

    def _call(self, what: str, send: Callable[[openai.OpenAI], T]) -> T:
        """Send with the next usable key; on 401/429 set that key aside and send again with the next one."""
        while True:
            picked = self._keys.acquire()
            if picked is None:
                reasons, healing = self._keys.exhausted_reason()
                raise LLMError(f"{self.name} {what}: every API key is set aside ({reasons})", retryable=healing,
                               status=429 if healing else 401)
            index, _key = picked
            try:
                return send(self._clients[index])
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status in (401, 429):
                    self._keys.set_aside(index, status, _retry_after(exc) if status == 429 else None)
                    continue
                raise LLMError(f"{self.name} {what} answered HTTP {status}",
                               retryable=status in (408, 409) or status >= 500, status=status) from None
            except openai.APIError as exc:  # connection errors, timeouts, unreadable answers, after SDK retries
                raise LLMError(f"{self.name} {what} unreachable: {exc.__class__.__name__}") from None

    def chat(self, messages: Sequence[dict[str, Any]], *, tools: Sequence[dict[str, Any]] | None = None,
             temperature: float | None = None) -> ChatResult:
        kwargs: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        if tools:
            kwargs["tools"] = list(tools)
        if temperature is not None:
            kwargs["temperature"] = temperature
        resp = self._call("chat", lambda client: client.chat.completions.create(**kwargs))
        if not resp.choices:
            raise LLMError(f"{self.name} chat answered without choices")
        choice = resp.choices[0]
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "{}")
            for c in (choice.message.tool_calls or []) if getattr(c, "function", None)
        )
        usage = Usage(resp.usage.prompt_tokens or 0, resp.usage.completion_tokens or 0) if resp.usage else Usage()
        return ChatResult(content=choice.message.content, tool_calls=calls, usage=usage,
                          model=resp.model or self.model, finish_reason=choice.finish_reason, provider=self.name)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not self.has_embeddings:
            raise LLMError(f"{self.name} has no embeddings API; use another embedding provider", retryable=False)
        if not self.embed_model:
            raise LLMError(f"{self.name}: no embedding model configured", retryable=False)
        if not texts:
            return []
        resp = self._call("embeddings",
                          lambda client: client.embeddings.create(model=self.embed_model, input=list(texts)))
        data = sorted(resp.data, key=lambda d: d.index)
        if len(data) != len(texts):
            raise LLMError(f"{self.name} embeddings answered {len(data)} vectors for {len(texts)} texts")
        return [list(d.embedding) for d in data]

    def transcribe(self, audio: bytes, filename: str, content_type: str) -> str:
        """Speech to text. `filename`'s extension matters: the server picks the audio format from it."""
        if not self.supports_transcription:
            raise LLMError(f"{self.name} has no transcription API", retryable=False)
        resp = self._call("transcription", lambda client: client.audio.transcriptions.create(
            model=self.transcription_model, file=(filename, audio, content_type)))
        text = getattr(resp, "text", None)
        if not isinstance(text, str):
            raise LLMError(f"{self.name} transcription answered without text")
        return text
