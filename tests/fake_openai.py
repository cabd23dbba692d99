"""A local OpenAI-compatible server for the tests: the real wire format, scripted failures, recorded requests.

It speaks what `openai` SDK clients (and DeepSeek/Ollama/vLLM clients) send and expect:
- POST /v1/chat/completions  -> `chat.completion` objects with `content` and/or `tool_calls`, `usage` ...
- POST /v1/embeddings        -> `list` of `embedding` objects; with `embedding_mode="per_token"` exactly what
  llama-cpp-python's server (0.3.x, a model without pooling) answers: one unnormalised vector per token (a BOS token
  first) for each input, `encoding_format` ignored, and, like 0.3.36, wrong vectors (unrelated to the text) for
  every input after the first of a request; `embeddings_status` makes every embeddings call fail with that HTTP
  status (an embedder outage)
- POST /v1/audio/transcriptions (multipart `file`, `model`) -> `{"text": ...}`: the uploaded bytes read as UTF-8,
  so a test "speaks" by uploading text; recorded with json `{"model", "filename", "bytes"}`

Unscripted chat calls are answered by the offline brain (`shared.llm.mock.MockProvider`), so a bot pointed here
behaves like it does on the mock provider, but through real HTTP and the real SDK. `script()` queues answers
for the next chat calls (429/500 errors in OpenAI's error format, fixed content, tool calls). A request whose
`Authorization: Bearer <key>` is not in `api_keys` is answered 401 before any script is consumed.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
import uuid
from typing import Any

from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from devtools.localserver import LocalServer

_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded."),
}


def error_body(status: int, message: str | None = None) -> dict:
    """An error body exactly as OpenAI sends it."""
    etype, code, text = _ERRORS.get(status, ("server_error", None, "Error."))
    return {"error": {"message": message or text, "type": etype, "param": None, "code": code}}


def hash_embedding(text: str, dim: int) -> list[float]:
    """Deterministic unit vector of hashed words: texts that share words are close; stable across processes."""
    vec = [0.0] * dim
    for word in re.findall(r"\w+", text.lower()):
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
        vec[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # the recorded requests are the log
        pass


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


class FakeOpenAI(LocalServer):
    thread_name = "fake-openai"

    def __init__(self, api_keys: set[str] | None = None, embedding_dim: int = 256, host: str = "127.0.0.1",
                 port: int = 0, embedding_mode: str = "pooled"):
        if embedding_mode not in ("pooled", "per_token"):
            raise ValueError("embedding_mode must be pooled or per_token")
        self.api_keys = set(api_keys) if api_keys is not None else None
        self.embedding_dim = embedding_dim
        self.embedding_mode = embedding_mode
        self.embeddings_status: int | None = None  # set: every embeddings call answers this HTTP error
        self._lock = threading.Lock()
        self._requests: list[dict] = []
        self._script: list[dict] = []
        super().__init__(host, port, request_handler=_QuietHandler)
        self.url = self.base_url + "/v1"

    # ---- test helpers
    @property
    def requests(self) -> list[dict]:
        """Every request so far: {"path", "headers", "json"} (a copy; safe to keep)."""
        with self._lock:
            return list(self._requests)

    def keys_used(self, path: str | None = None) -> list[str | None]:
        """The bearer key of each request (optionally of one path), in order."""
        return [_bearer(r["headers"]) for r in self.requests if path is None or r["path"] == path]

    def script(self, *responses: dict) -> None:
        """Queue answers for the next authorised chat calls: {"status": 429|500|...}, {"content": "..."},
        {"tool_calls": [{"name": ..., "arguments": {...} or "raw JSON text"}]}, {"respond": f} (f(request body)
        returns one of the others: a model that reads its prompt). Optional "headers" on any, and "delay"
        (seconds to wait before answering: a slow model). Optional on an answer: "cached_tokens" (reported as
        OpenAI's `usage.prompt_tokens_details.cached_tokens`; with "cache_style": "deepseek" as DeepSeek's
        `usage.prompt_cache_hit_tokens`/`prompt_cache_miss_tokens` instead) and "prompt_tokens" (the prompt's
        reported size; by default about a token per 4 characters of its messages). Without them, usage is as
        before: no cache fields at all."""
        for r in responses:
            if not isinstance(r, dict) or not ({"status", "content", "tool_calls", "respond"} & set(r)):
                raise ValueError(f"a scripted response needs status, content, tool_calls or respond: {r!r}")
        with self._lock:
            self._script.extend(responses)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._script.clear()

    # ---- HTTP
    def _wsgi(self, environ, start_response):
        return self._handle(Request(environ))(environ, start_response)

    def _handle(self, request: Request) -> Response:
        if request.path == "/v1/audio/transcriptions":
            return self._transcription(request)
        raw = request.get_data(as_text=True)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k: v for k, v in request.headers.items()}
        with self._lock:
            self._requests.append({"path": request.path, "headers": headers, "json": body})
        if self.api_keys is not None and _bearer(headers) not in self.api_keys:
            return _json(error_body(401), 401)
        if request.method != "POST" or request.path not in ("/v1/chat/completions", "/v1/embeddings"):
            return _json(error_body(404, f"Unknown request URL: {request.method} {request.path}."), 404)
        if not isinstance(body, dict) or not body.get("model"):
            return _json(error_body(400, "you must provide a model parameter"), 400)
        if request.path == "/v1/embeddings":
            return self._embeddings(body)
        with self._lock:
            scripted = self._script.pop(0) if self._script else None
        if scripted and "respond" in scripted:
            scripted = {**scripted, **scripted["respond"](body)}
        return self._chat(body, scripted)

    def _chat(self, body: dict, scripted: dict | None) -> Response:
        if scripted and scripted.get("delay"):
            time.sleep(float(scripted["delay"]))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _json(error_body(400, "'messages' must be a non-empty array"), 400)
        extra_headers = (scripted or {}).get("headers")
        if scripted and int(scripted.get("status", 200)) >= 300:
            status = int(scripted["status"])
            return _json(error_body(status), status, extra_headers)
        prompt_tokens = sum(_tokens(str(m.get("content") or "")) for m in messages if isinstance(m, dict))
        if scripted:
            content = scripted.get("content")
            tool_calls = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                           "function": {"name": c["name"],
                                        "arguments": c["arguments"] if isinstance(c.get("arguments"), str)
                                        else json.dumps(c.get("arguments") or {})}}
                          for c in scripted.get("tool_calls") or []]
            completion_tokens = _tokens(content or "") + sum(_tokens(c["function"]["arguments"]) for c in tool_calls)
        else:
            from shared.llm.mock import MockProvider  # the offline brain, imported late: it may evolve

            result = MockProvider().chat(messages, tools=body.get("tools"))
            content = result.content
            tool_calls = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                          for c in result.tool_calls]
            prompt_tokens = result.usage.prompt_tokens or prompt_tokens
            completion_tokens = result.usage.completion_tokens
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return _json({
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if tool_calls else "stop"}],
            "usage": _usage(prompt_tokens, completion_tokens, scripted),
            "system_fingerprint": "fp_fake",
        }, 200, extra_headers)

    def _transcription(self, request: Request) -> Response:
        upload = request.files.get("file") if request.method == "POST" else None
        audio = upload.read() if upload is not None else b""
        model = request.form.get("model")
        headers = {k: v for k, v in request.headers.items()}
        with self._lock:
            self._requests.append({"path": request.path, "headers": headers, "json": {
                "model": model, "filename": upload.filename if upload is not None else None, "bytes": len(audio)}})
        if self.api_keys is not None and _bearer(headers) not in self.api_keys:
            return _json(error_body(401), 401)
        if request.method != "POST":
            return _json(error_body(404, f"Unknown request URL: {request.method} {request.path}."), 404)
        if not model:
            return _json(error_body(400, "you must provide a model parameter"), 400)
        if upload is None or not audio:
            return _json(error_body(400, "'file' is a required property"), 400)
        return _json({"text": audio.decode("utf-8", errors="replace")})

    def _embeddings(self, body: dict) -> Response:
        if self.embeddings_status:
            return _json(error_body(self.embeddings_status), self.embeddings_status)
        if self.embedding_mode == "per_token":
            return self._per_token_embeddings(body)
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
            return _json(error_body(400, "'input' must be a string or an array of strings"), 400)
        tokens = sum(_tokens(t) for t in inputs)
        return _json({
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": hash_embedding(t, self.embedding_dim)}
                     for i, t in enumerate(inputs)],
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })


    def _per_token_embeddings(self, body: dict) -> Response:
        """llama-cpp-python's `Llama.create_embedding` for a model without pooling, as its FastAPI server sends it:
        `input` a string or a list of strings (anything else: 422 like its request validation), per input a list
        of token vectors, keys in its order, compact JSON. Its bug too: the token vectors of every input after the
        first of a request are not that text's (0.3.36 answers unrelated numbers there; here: salted hashes)."""
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
            return _json({"detail": [{"type": "string_type", "loc": ["body", "input"],
                                      "msg": "Input should be a valid string"}]}, 422)
        data, total = [], 0
        for i, text in enumerate(inputs):
            tokens = llama_tokens(text)
            total += len(tokens)
            salt = "" if i == 0 else f"garbage-{i}-{inputs[0]}:"
            data.append({"object": "embedding", "embedding": [token_vector(salt + t, self.embedding_dim)
                                                              for t in tokens], "index": i})
        payload = {"object": "list", "data": data, "model": body["model"],
                   "usage": {"prompt_tokens": total, "total_tokens": total}}
        return Response(json.dumps(payload, ensure_ascii=False, separators=(",", ":")), status=200,
                        mimetype="application/json")


def _usage(prompt_tokens: int, completion_tokens: int, scripted: dict | None) -> dict:
    """A chat answer's `usage`; with a scripted "cached_tokens", the prompt cache's hits as OpenAI (or DeepSeek)
    report them."""
    scripted = scripted or {}
    prompt_tokens = int(scripted.get("prompt_tokens", prompt_tokens))
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}
    if "cached_tokens" in scripted:
        cached = int(scripted["cached_tokens"])
        if scripted.get("cache_style") == "deepseek":
            usage.update(prompt_cache_hit_tokens=cached, prompt_cache_miss_tokens=prompt_tokens - cached)
        else:
            usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
    return usage


def llama_tokens(text: str) -> list[str]:
    """The fake tokenizer of the per-token mode: a BOS token, then words and punctuation."""
    return ["<bos>"] + re.findall(r"\w+|[^\w\s]", text.lower())


def token_vector(token: str, dim: int) -> list[float]:
    """A token's (unnormalised, deterministic) vector: a few hashed coordinates of magnitude 0.5-2; BOS is small."""
    vec = [0.0] * dim
    digest = hashlib.blake2b(token.encode(), digest_size=32).digest()
    for k in range(0, 32, 4):
        h = int.from_bytes(digest[k:k + 4], "big")
        vec[h % dim] += (0.5 + (h >> 24) / 170.0) * (1 if h & 1 else -1) * (0.2 if token == "<bos>" else 1.0)
    return vec


def _bearer(headers: dict) -> str | None:
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    return auth[7:] if auth.startswith("Bearer ") else None


def _json(payload: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(payload), status=status, headers=headers or {}, mimetype="application/json")
