"""Embedders turn texts into vectors for the pgvector memory; one call embeds a whole batch.

- `HashEmbedder`: offline and deterministic (embedding_model `local-hash`); no model, no network.
- `WordLlamaEmbedder` (shared/memory/wordllama_embedder.py): offline semantic vectors (embedding_model
  `wordllama-256`) from the static model packaged in PyPI `wordllama`; no torch, no network.
- `OpenAICompatEmbedder`: OpenAI (`text-embedding-3-small`, ...) or Ollama (`nomic-embed-text`, `all-minilm`)
  through the OpenAI-compatible embeddings endpoint.

`embedder_for(tenant)` picks one from `tenant.embedding_model` and the optional tenant block
`embedding: {provider, base_url, api_key}`. Every vector an embedder returns has exactly `dim` numbers (the
size of the tenant's `vector(dim)` column); a model that answers another size is a configuration error
(`DimensionMismatch`, naming both sizes). Servers that answer one vector per token (llama.cpp's server with a model
without pooling) are mean-pooled and L2-normalised here, in one place (`one_vector`), and asked one text per
request (see OpenAICompatEmbedder); an unusable answer (ragged, empty, not numbers) is an LLMError naming its shape.
"""
from __future__ import annotations

import hashlib
import math
import re
from functools import lru_cache
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from shared.config.settings import embedding_api_key, environment
from shared.errors import ConfigError
from shared.llm.base import LLMError
from shared.llm.openai_compat import OpenAICompatProvider
from shared.memory.wordllama_embedder import WordLlamaEmbedder
from shared.config.tenants import Tenant

OLLAMA_MODELS = ("nomic-embed-text", "all-minilm", "mxbai-embed-large", "snowflake-arctic-embed", "bge-m3")
LOCAL_MODELS = ("local-hash", "wordllama-256")
_WORD = re.compile(r"[^\W_]+")


@runtime_checkable
class Embedder(Protocol):
    """Batched text embedding. `embed` returns one `dim`-long vector per text, in order, or raises LLMError."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


@lru_cache(maxsize=1 << 16)
def _bucket(feature: str, dim: int) -> tuple[int, float]:
    """Index and sign of a feature: blake2b, so it is the same in every process (unlike `hash()`)."""
    h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "big")
    return h % dim, (1.0 if h >> 63 else -1.0)


class HashEmbedder:
    """Hashed bag of words plus character trigrams, L2-normalised.

    Texts that share words are close (cosine of the shared-word fraction); trigrams make "dentists" close to
    "dentist". Signed hashing keeps unrelated texts near 0 instead of biased upwards by collisions.
    """

    WORD_WEIGHT = 1.0
    TRIGRAM_WEIGHT = 0.25

    def __init__(self, dim: int = 256):
        if not isinstance(dim, int) or isinstance(dim, bool) or not 8 <= dim <= 16000:
            raise ValueError("HashEmbedder dim must be a whole number between 8 and 16000")
        self.dim = dim
        self.name = "local-hash"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._one(_check_text(t)) for t in texts]

    def _one(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        words = _WORD.findall(text.lower())
        for word in words:
            i, sign = _bucket("w:" + word, self.dim)
            vec[i] += sign * self.WORD_WEIGHT
            padded = f"#{word}#"
            for k in range(len(padded) - 2):
                i, sign = _bucket("t:" + padded[k:k + 3], self.dim)
                vec[i] += sign * self.TRIGRAM_WEIGHT
        if not words:  # no words at all: one fixed direction, never a zero vector (its cosine is undefined)
            i, sign = _bucket("<empty>", self.dim)
            vec[i] = sign
        norm = math.sqrt(sum(v * v for v in vec))
        return [v / norm for v in vec]


class OpenAICompatEmbedder:
    """Embeddings from an OpenAI-compatible server; inputs go in as few requests as the server allows.

    A server that answers per-token vectors (llama.cpp's server, llama-cpp-python 0.3.x, for a model without
    pooling) gets one text per request from then on: its per-token vectors of every input after the first of a
    request are wrong (unrelated to the text; checked against 0.3.36), and even the first one's differ slightly
    from the same text sent alone, so the batch that showed it is asked again, one text at a time.
    """

    MAX_BATCH = 512  # OpenAI accepts up to 2048 inputs per request; stay well below for local servers

    def __init__(self, *, provider: str, model: str, dim: int, api_key: str, base_url: str | None = None,
                 timeout: float = 30.0):
        self.name = model
        self.dim = dim
        self.provider = provider
        self.one_text_per_request = False  # set once the server answers per-token vectors
        self._client = OpenAICompatProvider(name=provider, model=model, api_key=api_key, base_url=base_url,
                                            embed_model=model, timeout=timeout)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = [_check_text(t) for t in texts]
        out: list[list[float]] = []
        while len(out) < len(texts):
            chunk = texts[len(out):len(out) + (1 if self.one_text_per_request else self.MAX_BATCH)]
            answered = self._request(chunk)
            if len(chunk) > 1 and is_per_token(answered[0]):
                self.one_text_per_request = True  # and this chunk again, one text at a time
                continue
            for raw in answered:
                vec = one_vector(raw, f"{self.provider} embedding model {self.name!r}")
                if len(vec) != self.dim:
                    raise DimensionMismatch(self.name, len(vec), self.dim)
                out.append(vec)
        return out

    def _request(self, chunk: list[str]) -> list[Any]:
        """One embeddings request: what the server answered per text, in order (not yet checked)."""
        try:
            answered = self._client.embed([t if t.strip() else " " for t in chunk])  # servers refuse ""
        except (LLMError, ConfigError):
            raise
        except Exception as exc:  # the SDK's own parsing (e.g. "no embedding data"): never its text
            raise LLMError(f"{self.provider} embeddings from model {self.name!r} failed: "
                           f"{exc.__class__.__name__}", retryable=False) from None
        if len(answered) != len(chunk):
            raise LLMError(f"{self.provider} embeddings returned {len(answered)} vectors for {len(chunk)} texts",
                           retryable=False)
        return answered


def is_per_token(raw: Any) -> bool:
    """Whether a server's answer for one text is per-token vectors (a non-empty list of lists)."""
    return isinstance(raw, (list, tuple)) and bool(raw) and all(isinstance(t, (list, tuple)) for t in raw)


class DimensionMismatch(ConfigError):
    """The model's vectors have another size than the tenant's `vector(dim)` column."""

    def __init__(self, model: str, model_dim: int, column_dim: int):
        self.model, self.model_dim, self.column_dim = model, model_dim, column_dim
        super().__init__(
            f"embedding model {model!r} returned {model_dim} dimensions, but the tenant database stores "
            f"{column_dim} (column memory_chunks.embedding is vector({column_dim})): set config.embedding_dim: "
            f"{model_dim} on a new tenant database (or migrate the column), or use a model that makes "
            f"{column_dim}-dimension vectors")


def one_vector(raw: Any, who: str) -> list[float]:
    """One text's vector from what a server answered: a list of numbers as is, or per-token vectors (a list of
    equally long lists of numbers, as llama.cpp's server sends for models without pooling) mean-pooled and
    L2-normalised. Anything else is an LLMError naming the shape."""
    if is_per_token(raw):
        tokens = [_numbers(t, f"{who} answered per-token vectors, but token {i}") for i, t in enumerate(raw)]
        sizes = sorted({len(t) for t in tokens})
        if len(sizes) != 1:
            raise LLMError(f"{who} answered per-token vectors of different sizes ({', '.join(map(str, sizes[:5]))})"
                           f"; cannot pool them into one vector", retryable=False)
        n = len(tokens)
        mean = [sum(column) / n for column in zip(*tokens)]
        norm = math.sqrt(sum(v * v for v in mean))
        if not norm or not math.isfinite(norm):
            raise LLMError(f"{who} answered per-token vectors whose mean is a zero vector", retryable=False)
        return [v / norm for v in mean]
    return _numbers(raw, f"{who} answered an embedding that")


def _numbers(values: Any, what: str) -> list[float]:
    """A non-empty list of finite numbers as floats, or an LLMError starting with `what`."""
    if not isinstance(values, (list, tuple)):
        raise LLMError(f"{what} is a {type(values).__name__}, not a list of numbers", retryable=False)
    if not values:
        raise LLMError(f"{what} is empty", retryable=False)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise LLMError(f"{what} holds a {type(v).__name__}, not only numbers", retryable=False)
        if not math.isfinite(v):
            raise LLMError(f"{what} holds {v!r}, not only finite numbers", retryable=False)
    return [float(v) for v in values]


class EmbeddingStore:
    """A store of one tenant that embeds: `embedder` defaults to `embedder_for(tenant)`, built on first use (a
    store in sql mode never needs one, so a tenant without an embeddings API still works there)."""

    def __init__(self, tenant: Tenant, embedder: Embedder | None = None):
        self.tenant = tenant
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = embedder_for(self.tenant)
        return self._embedder


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"embedders take strings, not {type(text).__name__}")
    return text


def _default_provider(tenant: Tenant) -> str:
    """By model name first (local-*, text-embedding-*, Ollama's models), then by the tenant's LLM provider."""
    model = tenant.embedding_model
    if model.startswith("local-") or model in LOCAL_MODELS:
        return "local"
    if model.startswith("text-embedding-"):
        return "openai"
    if model.split(":")[0] in OLLAMA_MODELS or tenant.llm.provider == "ollama":
        return "ollama"
    return "openai"


def embedder_for(tenant: Tenant, env: Mapping[str, str] | None = None) -> Embedder:
    """The embedder of a tenant; a ConfigError (naming the tenant, never a key) when it cannot have one.

    OpenAI keys, in order: `embedding.api_key`, the tenant's LLM key when its LLM provider is openai, then the
    environment's EMBEDDING_API_KEY. DeepSeek has no embeddings API, so a DeepSeek tenant needs one of those.
    """
    env = environment() if env is None else env
    where = f"tenant {tenant.tenant_id}"
    block = tenant.embedding  # parsed with the tenants file (shared.config.tenant_schema)
    provider = block.provider or _default_provider(tenant)
    model, dim = tenant.embedding_model, tenant.embedding_dim

    if provider == "local":
        if model == "local-hash":
            return HashEmbedder(dim)
        if model == "wordllama-256":
            if dim != 256:
                raise DimensionMismatch(model, 256, dim)
            return WordLlamaEmbedder()
        raise ConfigError(f"{where}: embedding_model {model!r} is not an offline model (offline: "
                          f"{', '.join(LOCAL_MODELS)})")
    if provider == "ollama":
        base_url = block.base_url or (tenant.llm.base_url if tenant.llm.provider == "ollama" else None)
        return OpenAICompatEmbedder(provider="ollama", model=model, dim=dim, api_key=block.api_key or "ollama",
                                    base_url=base_url)
    # openai
    api_key = block.api_key
    if not api_key and tenant.llm.provider == "openai":
        api_key = tenant.llm.api_key
    if not api_key:
        api_key = embedding_api_key(env)
    if not api_key:
        why = " (DeepSeek has no embeddings API)" if tenant.llm.provider == "deepseek" else ""
        raise ConfigError(f"{where}: embedding_model {model!r} needs an OpenAI API key{why}: set embedding.api_key "
                          f"or EMBEDDING_API_KEY, or use embedding_model local-hash")
    base_url = block.base_url or (tenant.llm.base_url if tenant.llm.provider == "openai" else None)
    return OpenAICompatEmbedder(provider="openai", model=model, dim=dim, api_key=api_key, base_url=base_url)
