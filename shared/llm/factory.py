"""Build the provider object a tenant's LLMSettings describe (with key rotation and the fallback)."""
from __future__ import annotations

from shared.llm.base import LLMProvider
from shared.llm.failover import FailoverProvider
from shared.llm.mock import MockProvider
from shared.llm.openai_compat import OpenAICompatProvider
from shared.config.llm import LLMSettings


def _single(cfg: LLMSettings) -> LLMProvider:
    if cfg.provider == "mock":
        return MockProvider(model=cfg.model_chat or "mock-chat")
    return OpenAICompatProvider(name=cfg.provider, model=cfg.model_chat, api_keys=cfg.keys, base_url=cfg.base_url,
                                embed_model=cfg.model_embed, timeout=cfg.timeout, max_retries=cfg.max_retries)


def provider_for(cfg: LLMSettings) -> LLMProvider:
    """Construction only: no network call is made here."""
    primary = _single(cfg)
    return FailoverProvider(primary, _single(cfg.fallback)) if cfg.fallback is not None else primary
