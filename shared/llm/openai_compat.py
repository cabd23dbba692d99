"""Any OpenAI-compatible chat server (OpenAI, DeepSeek, Ollama, vLLM, llama.cpp) through the `openai` SDK.

One bounded deadline per call: `timeout` seconds cover every attempt of the call (the SDK's own retries are off;
ours retry connection errors, 408/409 and 5xx with a short backoff only while the deadline leaves room), so a
hung server costs `timeout`, not timeout x attempts. A circuit breaker per provider entry (shared.llm.breaker)
makes the next calls skip a server that just failed. With several API keys, a key answering 401 or 429 is set
aside (shared.llm.keys) and the same call is sent at once with the next key. Per-server quirks come from
shared.llm.presets. An answer with neither text nor a tool call is asked once more, without tools and with a
nudge; a second empty answer is an LLMError (so the fallback, or the apology, answers). Error messages carry the
provider, the HTTP status and key indexes, never the server's error text (an OpenAI 401 quotes part of the key)
and never a key.
"""
from __future__ import annotations

import html
import logging
import time
from dataclasses import replace
from typing import Any, Callable, Sequence, TypeVar

import openai

from shared import metrics
from shared.llm.base import ChatResult, LLMError, ToolCall, Usage
from shared.llm.breaker import Breaker
from shared.llm.keys import KeyRing
from shared.llm.presets import Preset, preset_for
from shared.tools.schema import simplified_tools

log = logging.getLogger(__name__)
T = TypeVar("T")
NUDGE = {"role": "user", "content": "(Your last answer was empty. Answer the message above now, in plain words.)"}
BACKOFF_CAP = 4.0


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers if exc.response is not None else {}
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(headers[header]) / divisor
        except (KeyError, TypeError, ValueError):
            continue
    return None


def _cached_tokens(usage: Any) -> int:
    """Prompt tokens the provider served from its prompt cache: OpenAI's `prompt_tokens_details.cached_tokens`,
    DeepSeek's `prompt_cache_hit_tokens`; 0 when the server says neither (llama.cpp, Ollama, vLLM)."""
    details = getattr(usage, "prompt_tokens_details", None)
    cached = details.get("cached_tokens") if isinstance(details, dict) else getattr(details, "cached_tokens", None)
    if cached is None:
        cached = getattr(usage, "prompt_cache_hit_tokens", None)
    try:
        return max(0, int(cached or 0))
    except (TypeError, ValueError):
        return 0


def _usage(usage: Any) -> Usage:
    if not usage:
        return Usage()
    prompt = usage.prompt_tokens or 0
    return Usage(prompt, usage.completion_tokens or 0, min(prompt, _cached_tokens(usage)))


def _no_null_content(message: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp answers HTTP 500 to `content: null` (an assistant message that only calls tools)."""
    return {**message, "content": ""} if message.get("content") is None else message


def tool_results_as_user(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`tool` messages as user messages naming their tool, for chat templates that drop the `tool` role."""
    names = {c.get("id"): (c.get("function") or {}).get("name", "tool")
             for m in messages if m.get("role") == "assistant" for c in m.get("tool_calls") or []}
    return [{"role": "user", "content": f"[result of {names.get(m.get('tool_call_id'), 'tool')}] "
                                        f"{m.get('content') or ''}"} if m.get("role") == "tool" else m
            for m in messages]


def one_system_message(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with a single system message, first: system messages right after it are appended to it, later
    ones put in front of the next user message (or, with none after them, sent as a user message)."""
    out: list[dict[str, Any]] = []
    pending: list[str] = []
    for m in messages:
        role = m.get("role")
        if role == "system" and len(out) == 1 and out[0].get("role") == "system":  # right after the first
            out[0] = {**out[0], "content": f"{out[0].get('content') or ''}\n\n{m.get('content') or ''}"}
        elif role == "system" and out:
            pending.append(str(m.get("content") or ""))
        elif pending and role == "user":
            out.append({**m, "content": "\n\n".join([*pending, str(m.get("content") or "")])})
            pending = []
        else:
            out.append(m)
    return out + ([{"role": "user", "content": "\n\n".join(pending)}] if pending else [])


class OpenAICompatProvider:
    def __init__(self, *, name: str, model: str | None = None, api_key: str | None = None,
                 api_keys: Sequence[str] = (), base_url: str | None = None, embed_model: str | None = None,
                 timeout: float = 60.0, max_retries: int = 2, rate_limit_cooldown: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, transcription_model: str = "whisper-1",
                 entry: str = "", max_tokens: int | None = None, tool_schema: str | None = None,
                 breaker: Breaker | None = None, sleep: Callable[[float], None] = time.sleep):
        preset = preset_for(name)
        if preset is None and not base_url:
            raise LLMError(f"{name}: not a known provider; give it a base_url", retryable=False)
        self.preset = preset or Preset(base_url, "")
        self.name, self.entry = name, entry or name
        self.model = model or self.preset.chat_model
        if not self.model:
            raise LLMError(f"{name}: no chat model configured", retryable=False)
        self.embed_model = embed_model
        self.base_url = base_url or self.preset.base_url
        self.has_embeddings = self.preset.has_embeddings  # DeepSeek has none, whatever the URL
        # Only OpenAI (or a server configured as provider `openai`) has /audio/transcriptions: DeepSeek and
        # Ollama answer 404, so a voice note there would cost a failed upload every time.
        self.supports_transcription = self.preset.transcription
        self.transcription_model = transcription_model
        self.timeout, self.max_retries, self.max_tokens = timeout, max_retries, max_tokens
        self.tool_schema = tool_schema or self.preset.tool_schema
        self.breaker = breaker
        self._clock, self._sleep = clock, sleep
        keys = tuple(k for k in (*([api_key] if api_key else []), *api_keys) if k)
        keys = tuple(dict.fromkeys(keys))
        self._keys = KeyRing(keys, label=name, rate_limit_cooldown=rate_limit_cooldown, clock=clock)
        # local servers (Ollama) accept any key; retries are ours (one deadline per call), never the SDK's
        self._clients = [openai.OpenAI(api_key=key, base_url=self.base_url, timeout=timeout, max_retries=0)
                         for key in keys or ("not-needed",)]

    def __repr__(self) -> str:
        return f"OpenAICompatProvider(name={self.name!r}, model={self.model!r}, base_url={self.base_url!r})"

    def _call(self, what: str, send: Callable[[openai.OpenAI, float], T]) -> T:
        """`send` within one deadline, through the breaker: outages trip it, any answer closes it."""
        if self.breaker is not None:
            self.breaker.before_call()
        try:
            result = self._attempts(what, send)
        except LLMError as exc:
            if self.breaker is not None:
                self.breaker.failed() if exc.outage else self.breaker.succeeded()
            raise
        if self.breaker is not None:
            self.breaker.succeeded()
        return result

    def _attempts(self, what: str, send: Callable[[openai.OpenAI, float], T]) -> T:
        """Send with the next usable key, each attempt given what is left of the deadline; on 401/429 set that
        key aside and send again with the next one; retry outages with backoff while the deadline has room."""
        deadline = self._clock() + self.timeout
        retries = 0
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise LLMError(f"{self.name} {what}: no answer within the {self.timeout:g} s deadline", outage=True)
            picked = self._keys.acquire()
            if picked is None:
                reasons, healing = self._keys.exhausted_reason()
                wait = self._keys.ready_in()
                if healing and wait < remaining:
                    self._sleep(wait)
                    continue
                raise LLMError(f"{self.name} {what}: every API key is set aside ({reasons})", retryable=healing,
                               status=429 if healing else 401, retry_after=wait if healing else None)
            index, _key = picked
            try:
                return send(self._clients[index], remaining)
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status in (401, 429):
                    self._keys.set_aside(index, status, _retry_after(exc) if status == 429 else None)
                    continue
                error = LLMError(f"{self.name} {what} answered HTTP {status}", status=status,
                                 retryable=status in (408, 409) or status >= 500, outage=status == 408 or status >= 500)
            except openai.APITimeoutError:
                error = LLMError(f"{self.name} {what}: no answer within the {self.timeout:g} s deadline", outage=True)
            except openai.APIError as exc:  # connection errors, unreadable answers
                error = LLMError(f"{self.name} {what} unreachable: {exc.__class__.__name__}", outage=True)
            pause = min(0.5 * 2 ** retries, BACKOFF_CAP)
            if not error.retryable or retries >= self.max_retries or self._clock() + pause >= deadline:
                raise error from None
            self._sleep(pause)
            retries += 1

    def _chat_kwargs(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None,
                     temperature: float | None, tool_choice: Any) -> dict[str, Any]:
        if self.preset.tool_results_as_user:
            messages = tool_results_as_user(messages)
        if self.preset.single_system_message:
            messages = one_system_message(messages)
        kwargs: dict[str, Any] = {"model": self.model, "messages": [_no_null_content(m) for m in messages]}
        if tools:
            kwargs["tools"] = simplified_tools(list(tools)) if self.tool_schema == "simple" else list(tools)
            kwargs["tool_choice"] = tool_choice or "auto"  # without it llama.cpp's server drops the tools
        if self.max_tokens:
            kwargs[self.preset.max_tokens_param] = self.max_tokens
        if temperature is not None:
            kwargs["temperature"] = temperature
        return kwargs

    def _complete(self, kwargs: dict[str, Any]) -> ChatResult:
        resp = self._call("chat", lambda client, timeout: client.chat.completions.create(**kwargs, timeout=timeout))
        if not resp.choices:
            raise LLMError(f"{self.name} chat answered without choices")
        choice = resp.choices[0]
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "{}")
            for c in (choice.message.tool_calls or []) if getattr(c, "function", None)
        )
        usage = _usage(resp.usage)
        content = (choice.message.content or "").strip()
        if content and self.preset.unescape_html and "&" in content:
            content = html.unescape(content)
        return ChatResult(content=content or None, tool_calls=calls, usage=usage, model=resp.model or self.model,
                          finish_reason=choice.finish_reason, provider=self.name, entry=self.entry)

    @metrics.metered_chat  # calls, latency and tokens by tenant, provider and model
    def chat(self, messages: Sequence[dict[str, Any]], *, tools: Sequence[dict[str, Any]] | None = None,
             temperature: float | None = None, tool_choice: Any = None) -> ChatResult:
        result = self._complete(self._chat_kwargs(messages, tools, temperature, tool_choice))
        if result.content or result.tool_calls:
            return result
        # Nothing usable (llama.cpp's grammar forces empty content when the model picks no offered tool): once
        # more, without tools, with a nudge.
        log.warning("LLM answered nothing; asking once more without tools", extra={
            "llm_provider": self.name, "llm_model": self.model, "finish_reason": result.finish_reason})
        second = self._complete(self._chat_kwargs([*messages, NUDGE], None, temperature, None))
        usage = result.usage + second.usage
        if second.content or second.tool_calls:
            return replace(second, usage=usage)
        raise LLMError(f"{self.name} chat answered nothing, twice (finish_reason {second.finish_reason})",
                       retryable=False)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not self.has_embeddings:
            raise LLMError(f"{self.name} has no embeddings API; use another embedding provider", retryable=False)
        if not self.embed_model:
            raise LLMError(f"{self.name}: no embedding model configured", retryable=False)
        if not texts:
            return []
        resp = self._call("embeddings",
                          lambda client, timeout: client.embeddings.create(model=self.embed_model, input=list(texts),
                                                                             timeout=timeout))
        data = sorted(resp.data, key=lambda d: d.index)
        if len(data) != len(texts):
            raise LLMError(f"{self.name} embeddings answered {len(data)} vectors for {len(texts)} texts")
        return [list(d.embedding) for d in data]

    def transcribe(self, audio: bytes, filename: str, content_type: str) -> str:
        """Speech to text. `filename`'s extension matters: the server picks the audio format from it."""
        if not self.supports_transcription:
            raise LLMError(f"{self.name} has no transcription API", retryable=False)
        resp = self._call("transcription", lambda client, timeout: client.audio.transcriptions.create(
            model=self.transcription_model, file=(filename, audio, content_type), timeout=timeout))
        text = getattr(resp, "text", None)
        if not isinstance(text, str):
            raise LLMError(f"{self.name} transcription answered without text")
        return text
