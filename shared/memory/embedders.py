"""Embedders turn texts into vectors for the pgvector memory; one call embeds a whole batch.

- `HashEmbedder`: offline and deterministic (embedding_model `local-hash`); no model, no network.
- `OpenAICompatEmbedder`: OpenAI (`text-embedding-3-small`, ...) or Ollama (`nomic-embed-text`, `all-minilm`)
  through the OpenAI-compatible embeddings endpoint.

`embedder_for(tenant)` picks one from `tenant.embedding_model` and the optional tenant block
`embedding: {provider, base_url, api_key}`. Every vector an embedder returns has exactly `dim` numbers (the
size of the tenant's `vector(dim)` column); a model that answers another size is a configuration error.
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
from shared.config.tenants import Tenant

OLLAMA_MODELS = ("nomic-embed-text", "all-minilm", "mxbai-embed-large", "snowflake-arctic-embed", "bge-m3")
LOCAL_MODELS = ("local-hash",)
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
    """Embeddings from an OpenAI-compatible server; inputs go in as few requests as the server allows."""

    MAX_BATCH = 512  # OpenAI accepts up to 2048 inputs per request; stay well below for local servers

    def __init__(self, *, provider: str, model: str, dim: int, api_key: str, base_url: str | None = None,
                 timeout: float = 30.0):
        self.name = model
        self.dim = dim
        self.provider = provider
        self._client = OpenAICompatProvider(name=provider, model=model, api_key=api_key, base_url=base_url,
                                            embed_model=model, timeout=timeout)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = [_check_text(t) for t in texts]
        out: list[list[float]] = []
        for start in range(0, len(texts), self.MAX_BATCH):
            chunk = texts[start:start + self.MAX_BATCH]
            vectors = self._client.embed([t if t.strip() else " " for t in chunk])  # servers refuse ""
            if len(vectors) != len(chunk):
                raise LLMError(f"{self.provider} embeddings returned {len(vectors)} vectors for {len(chunk)} texts",
                               retryable=False)
            for v in vectors:
                if len(v) != self.dim:
                    raise ConfigError(f"embedding model {self.name!r} returned {len(v)} dimensions, but the "
                                      f"tenant database stores {self.dim} (set config.embedding_dim to match "
                                      f"the model, on a new database)")
            out.extend([float(x) for x in v] for v in vectors)
        return out


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"embedders take strings, not {type(text).__name__}")
    return text


def _default_provider(tenant: Tenant) -> str:
    """By model name first (local-*, text-embedding-*, Ollama's models), then by the tenant's LLM provider."""
    model = tenant.embedding_model
    if model.startswith("local-"):
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
