"""Build the provider a tenant is configured for."""
from __future__ import annotations

from shared.llm.base import LLMProvider
from shared.llm.mock import MockProvider
from shared.llm.openai_compat import OpenAICompatProvider
from shared.tenants import LLMSettings


def provider_for(cfg: LLMSettings) -> LLMProvider:
    if cfg.provider == "mock":
        return MockProvider(model=cfg.model_chat or "mock-chat")
    return OpenAICompatProvider(name=cfg.provider, model=cfg.model_chat, api_key=cfg.api_key,
                                base_url=cfg.base_url, embed_model=cfg.model_embed)
