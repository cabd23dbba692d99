"""LLMSettings: which provider a tenant talks to, and how the tenants.yaml `llm:` block becomes one.

Precedence (lowest first): environment defaults (LLM_*), the tenant's `llm:` block, the active row of the
tenant's `llm_providers` table (see shared.config.providers.resolve_llm). Keys come from `${ENV}` values or from
environment variables named in `api_key_envs`; errors name the tenant, the field and the variable, never a key.

`api_key_envs` (in tenants.yaml and in `llm_providers` rows alike) may name only variables made to hold LLM keys:
names starting with `WABOT_LLM_KEY_`, or listed in `LLM_KEY_ENVS_ALLOWED` (comma-separated). Why: a row of the
database, less trusted than the operator's file, could otherwise point a foreign `base_url` at INFOBIP_API_KEY or
a webhook token and receive it as a Bearer key. Names of the bot's own secrets (INFOBIP_*, WEBHOOK_*, DATABASE_*,
REDIS_*, ...) are refused even when listed. One rule for both places keeps it simple; the operator's file can
still use any variable through `api_key: "${ANY_NAME}"`, which a database row cannot.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from shared.errors import ConfigError, reject_unknown_keys
from shared.config.settings import LLM_PROVIDERS, Settings

LLM_KEYS = {"provider", "model_chat", "base_url", "api_key", "api_keys", "api_key_envs", "fallback", "timeout",
            "max_retries"}
FALLBACK_KEYS = LLM_KEYS - {"fallback", "timeout", "max_retries"}
PROVIDERS_NEEDING_KEY = ("openai", "deepseek")
DEFAULT_CHAT_MODELS = {"deepseek": "deepseek-chat", "ollama": "llama3.1", "mock": "mock-chat", "openai": "gpt-4o-mini"}
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KEY_ENV_PREFIX = "WABOT_LLM_KEY_"
KEY_ENVS_ALLOWED = "LLM_KEY_ENVS_ALLOWED"   # the setting: more names api_key_envs may use, comma-separated
# The bot's own secrets and connection strings: never an LLM key, whatever LLM_KEY_ENVS_ALLOWED says.
NEVER_KEY_PREFIXES = ("INFOBIP_", "WEBHOOK_", "DATABASE_", "REDIS_", "CELERY_", "FLOWER_", "TEST_DATABASE_",
                      "TEST_REDIS_")
KEY_ENV_RULE = (f"api_key_envs may name only variables starting with {KEY_ENV_PREFIX} or listed in "
                f"{KEY_ENVS_ALLOWED}, never {', '.join(p + '*' for p in NEVER_KEY_PREFIXES[:4])} ones")


@dataclass(frozen=True)
class LLMSettings:
    """The tenant's effective LLM provider. Equal settings build equal providers (the cache relies on it)."""

    provider: str
    model_chat: str
    model_embed: str
    base_url: str | None
    api_key: str = field(repr=False)  # the first key ('' when none); kept for callers that know one key
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # every key, rotated on 401/429
    fallback: "LLMSettings | None" = None  # answers when this provider fails after its retries
    timeout: float = 60.0
    max_retries: int = 2  # the SDK's own retries (connection errors, 408/409/429/5xx) before failing over
    source: str = "env"  # env | tenants.yaml | llm_providers:<name>: where these settings came from

    @property
    def keys(self) -> tuple[str, ...]:
        return self.api_keys or ((self.api_key,) if self.api_key else ())


def default_chat_model(provider: str) -> str:
    return DEFAULT_CHAT_MODELS.get(provider, "gpt-4o-mini")


def _text(doc: Mapping[str, Any], key: str, where: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be a string")
    return str(value).strip() or None


def _text_list(doc: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}.{key} must be a list of non-empty strings")
    return [v.strip() for v in value]


def allowed_key_envs(env: Mapping[str, str]) -> frozenset[str]:
    """The names LLM_KEY_ENVS_ALLOWED adds to the WABOT_LLM_KEY_ prefix; a malformed or forbidden entry is an error
    naming the entry (a name, never a value)."""
    names = set()
    for i, raw in enumerate((env.get(KEY_ENVS_ALLOWED) or "").split(","), start=1):
        name = raw.strip()
        if not name:
            continue
        if not ENV_NAME.match(name):
            raise ConfigError(f"{KEY_ENVS_ALLOWED}: entry #{i} is not an environment variable name")
        if name.upper().startswith(NEVER_KEY_PREFIXES):
            raise ConfigError(f"{KEY_ENVS_ALLOWED}: {name} may not be allowed as an LLM key; {KEY_ENV_RULE}")
        names.add(name)
    return frozenset(names)


def key_env_problem(name: str, env: Mapping[str, str]) -> str | None:
    """Why `name` may not appear in api_key_envs (naming the variable and the rule), or None when it may."""
    if not isinstance(name, str) or not ENV_NAME.match(name):
        return "api_key_envs entries must be environment variable names"
    if name.upper().startswith(NEVER_KEY_PREFIXES):
        return f"environment variable {name} is not allowed in api_key_envs: {KEY_ENV_RULE}"
    if name.startswith(KEY_ENV_PREFIX) and len(name) > len(KEY_ENV_PREFIX):
        return None
    if name in allowed_key_envs(env):
        return None
    return f"environment variable {name} is not allowed in api_key_envs: {KEY_ENV_RULE}"


def keys_from_envs(names: list[str], env: Mapping[str, str], where: str) -> tuple[str, ...]:
    """The values of the named environment variables. Every name must pass the allowlist (key_env_problem) before
    any value is read; an unset one is an error naming it. Errors name variables and rules, never values."""
    for name in names:
        problem = key_env_problem(name, env)
        if problem:
            raise ConfigError(f"{where}: {problem}")
    keys = []
    for name in names:
        value = (env.get(name) or "").strip()
        if not value:
            raise ConfigError(f"{where}: environment variable {name} (from api_key_envs) is not set")
        keys.append(value)
    return tuple(keys)


def parse_llm_block(doc: Any, settings: Settings, *, where: str, model_embed: str, env: Mapping[str, str],
                    allow_fallback: bool = True) -> LLMSettings:
    """Validate a tenants.yaml `llm:` block (already `${ENV}`-interpolated) over the environment defaults."""
    doc = doc or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: llm must be a mapping")
    field_where = f"{where}: llm" if allow_fallback else f"{where}: llm.fallback"
    allowed = LLM_KEYS if allow_fallback else FALLBACK_KEYS
    reject_unknown_keys(doc, allowed, field_where)

    provider = (_text(doc, "provider", field_where) or settings.llm_provider or "mock").lower()
    if provider not in LLM_PROVIDERS:
        raise ConfigError(f"{field_where}.provider must be one of {', '.join(LLM_PROVIDERS)}")
    same_provider = provider == settings.llm_provider

    keys: list[str] = []
    single = _text(doc, "api_key", field_where)
    if single:
        keys.append(single)
    keys += _text_list(doc, "api_keys", field_where)
    keys += keys_from_envs(_text_list(doc, "api_key_envs", field_where), env, field_where)
    if not keys and same_provider and settings.llm_api_key:
        keys = [settings.llm_api_key]
    if provider in PROVIDERS_NEEDING_KEY and not keys:
        raise ConfigError(f"{field_where}.api_key is not set (and LLM_API_KEY does not apply to provider {provider})")
    keys = list(dict.fromkeys(keys))  # a key listed twice is one key

    base_url = _text(doc, "base_url", field_where) or (settings.llm_base_url if same_provider else None)
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{field_where}.base_url must start with http:// or https://")

    timeout, max_retries = 60.0, 2
    if allow_fallback:
        timeout = doc.get("timeout", timeout)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 600:
            raise ConfigError(f"{field_where}.timeout must be a number of seconds between 0 and 600")
        max_retries = doc.get("max_retries", max_retries)
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or not 0 <= max_retries <= 10:
            raise ConfigError(f"{field_where}.max_retries must be a whole number between 0 and 10")

    fallback = None
    if allow_fallback and doc.get("fallback") is not None:
        fallback = parse_llm_block(doc["fallback"], settings, where=where, model_embed=model_embed, env=env,
                                   allow_fallback=False)
        fallback = replace(fallback, timeout=float(timeout), max_retries=max_retries)

    return LLMSettings(
        provider=provider,
        model_chat=_text(doc, "model_chat", field_where) or (settings.llm_model_chat if same_provider else None)
        or default_chat_model(provider),
        model_embed=model_embed,
        base_url=base_url,
        api_key=keys[0] if keys else "",
        api_keys=tuple(keys),
        fallback=fallback,
        timeout=float(timeout),
        max_retries=max_retries,
        source="tenants.yaml" if doc else "env",
    )

