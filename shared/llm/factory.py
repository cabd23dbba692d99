"""Build the provider object a tenant's LLMSettings describe (key rotation, deadline, circuit breaker, fallback)."""
from __future__ import annotations

from shared.llm.base import LLMProvider
from shared.llm.breaker import Breakers
from shared.llm.failover import FailoverProvider
from shared.llm.mock import MockProvider
from shared.llm.openai_compat import OpenAICompatProvider
from shared.config.llm import LLMSettings


def _single(cfg: LLMSettings, breakers: Breakers | None) -> LLMProvider:
    if cfg.provider == "mock":
        return MockProvider(model=cfg.model_chat or "mock-chat", entry=cfg.name)
    breaker = None
    if breakers is not None and cfg.circuit_seconds > 0:
        # One breaker per server and model, whichever tenant uses it: an outage is the server's, not a tenant's.
        breaker = breakers.get(cfg.name, f"{cfg.provider}|{cfg.base_url or ''}|{cfg.model_chat}",
                               failures=1, open_seconds=cfg.circuit_seconds, trial_seconds=cfg.timeout + 5)
    return OpenAICompatProvider(name=cfg.provider, model=cfg.model_chat, api_keys=cfg.keys, base_url=cfg.base_url,
                                embed_model=cfg.model_embed, timeout=cfg.timeout, max_retries=cfg.max_retries,
                                entry=cfg.name, max_tokens=cfg.max_tokens, tool_schema=cfg.tool_schema,
                                breaker=breaker)


def provider_for(cfg: LLMSettings, breakers: Breakers | None = None) -> LLMProvider:
    """Construction only: no network call is made here. `breakers` share circuit state (through Redis when
    built with a client); None: no circuit breaker."""
    primary = _single(cfg, breakers)
    return FailoverProvider(primary, _single(cfg.fallback, breakers)) if cfg.fallback is not None else primary
