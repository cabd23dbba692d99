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
from shared.llm.presets import TOOL_SCHEMA_MODES, preset_for

LLM_KEYS = {"provider", "model_chat", "base_url", "api_key", "api_keys", "api_key_envs", "fallback", "timeout",
            "max_retries", "name", "max_tokens", "tool_schema", "turn_seconds", "circuit_seconds"}
PRIMARY_ONLY = {"fallback", "timeout", "max_retries", "turn_seconds", "circuit_seconds"}  # the fallback shares them
FALLBACK_KEYS = LLM_KEYS - PRIMARY_ONLY
PROVIDERS_NEEDING_KEY = ("openai", "deepseek")
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
    fallback: "LLMSettings | None" = None  # answers when this provider fails, or at once while its circuit is open
    timeout: float = 30.0  # ONE deadline per model call, every attempt included
    max_retries: int = 2  # extra attempts after connection errors, 408/409/5xx, while the deadline leaves room
    source: str = "env"  # env | tenants.yaml | llm_providers:<name>: where these settings came from
    name: str = "primary"  # the entry's name in llm_usage.provider_entry (tenants.yaml `name`, or the row's name)
    max_tokens: int = 1024  # the answer's cap per call: a model that does not stop must not run to its context end
    tool_schema: str | None = None  # full | simple; None: the provider preset's (shared.llm.presets)
    turn_seconds: float = 120.0  # a turn's model time, retries included, after which the user gets the apology
    circuit_seconds: float = 30.0  # how long a provider that failed is skipped (0: never skipped)

    @property
    def keys(self) -> tuple[str, ...]:
        return self.api_keys or ((self.api_key,) if self.api_key else ())


def default_chat_model(provider: str) -> str:
    if provider == "mock":
        return "mock-chat"
    preset = preset_for(provider)
    return preset.chat_model if preset is not None else ""


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


def _number(doc: Mapping[str, Any], key: str, default: float, low: float, high: float, where: str, *,
            whole: bool = False, low_open: bool = False) -> float:
    value = doc.get(key, default)
    kind = "a whole number" if whole else "a number"
    ok = isinstance(value, int if whole else (int, float)) and not isinstance(value, bool)
    if not ok or value > high or value < low or (low_open and value == low):
        raise ConfigError(f"{where}.{key} must be {kind} between {low:g} and {high:g}")
    return value


def _limits(doc: Mapping[str, Any], where: str, primary: bool) -> dict[str, Any]:
    """The numeric and mode fields of an llm block; the primary-only ones only on the primary (the fallback
    shares the primary's deadline, retries, turn ceiling and circuit time)."""
    limits: dict[str, Any] = {"max_tokens": int(_number(doc, "max_tokens", 1024, 1, 200_000, where, whole=True))}
    tool_schema = _text(doc, "tool_schema", where)
    if tool_schema is not None and tool_schema not in TOOL_SCHEMA_MODES:
        raise ConfigError(f"{where}.tool_schema must be one of {', '.join(TOOL_SCHEMA_MODES)}")
    limits["tool_schema"] = tool_schema
    if primary:
        limits.update(
            timeout=float(_number(doc, "timeout", 30.0, 0, 600, where, low_open=True)),
            max_retries=int(_number(doc, "max_retries", 2, 0, 10, where, whole=True)),
            turn_seconds=float(_number(doc, "turn_seconds", 120.0, 5, 600, where)),  # < the stalled-turn sweep
            circuit_seconds=float(_number(doc, "circuit_seconds", 30.0, 0, 3600, where)))
    return limits


def _block_keys(doc: Mapping[str, Any], settings: Settings, provider: str, env: Mapping[str, str],
                where: str) -> list[str]:
    keys: list[str] = []
    single = _text(doc, "api_key", where)
    if single:
        keys.append(single)
    keys += _text_list(doc, "api_keys", where)
    keys += keys_from_envs(_text_list(doc, "api_key_envs", where), env, where)
    if not keys and provider == settings.llm_provider and settings.llm_api_key:
        keys = [settings.llm_api_key]
    if provider in PROVIDERS_NEEDING_KEY and not keys:
        raise ConfigError(f"{where}.api_key is not set (and LLM_API_KEY does not apply to provider {provider})")
    return list(dict.fromkeys(keys))  # a key listed twice is one key


def parse_llm_block(doc: Any, settings: Settings, *, where: str, model_embed: str, env: Mapping[str, str],
                    allow_fallback: bool = True) -> LLMSettings:
    """Validate a tenants.yaml `llm:` block (already `${ENV}`-interpolated) over the environment defaults."""
    doc = doc or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: llm must be a mapping")
    field_where = f"{where}: llm" if allow_fallback else f"{where}: llm.fallback"
    reject_unknown_keys(doc, LLM_KEYS if allow_fallback else FALLBACK_KEYS, field_where)

    provider = (_text(doc, "provider", field_where) or settings.llm_provider or "mock").lower()
    if provider not in LLM_PROVIDERS:
        raise ConfigError(f"{field_where}.provider must be one of {', '.join(LLM_PROVIDERS)}")
    same_provider = provider == settings.llm_provider
    keys = _block_keys(doc, settings, provider, env, field_where)
    base_url = _text(doc, "base_url", field_where) or (settings.llm_base_url if same_provider else None)
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{field_where}.base_url must start with http:// or https://")
    model_chat = (_text(doc, "model_chat", field_where) or (settings.llm_model_chat if same_provider else None)
                  or default_chat_model(provider))
    if not model_chat:
        raise ConfigError(f"{field_where}.model_chat is not set: provider {provider} serves the model it was "
                          f"started with; name it here (or in LLM_MODEL_CHAT)")
    limits = _limits(doc, field_where, allow_fallback)

    fallback = None
    if allow_fallback and doc.get("fallback") is not None:
        fallback = parse_llm_block(doc["fallback"], settings, where=where, model_embed=model_embed, env=env,
                                   allow_fallback=False)
        fallback = replace(fallback, timeout=limits["timeout"], max_retries=limits["max_retries"],
                           turn_seconds=limits["turn_seconds"], circuit_seconds=limits["circuit_seconds"])

    return LLMSettings(
        provider=provider, model_chat=model_chat, model_embed=model_embed, base_url=base_url,
        api_key=keys[0] if keys else "", api_keys=tuple(keys), fallback=fallback,
        source="tenants.yaml" if doc else "env",
        name=_text(doc, "name", field_where) or ("primary" if allow_fallback else "fallback"),
        **limits,
    )
