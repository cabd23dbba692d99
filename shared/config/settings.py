"""Process-wide settings, read once from the environment (and a `.env` file) into a typed object.

Every ingress and worker process calls :func:`load_settings` at start-up. A missing or malformed value raises
:class:`ConfigError` whose message names the variable, never its value. An empty value (`NAME=` in `.env`, as
`.env.example` has) counts as unset: the default applies, or a required variable is reported missing.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlparse

from shared.errors import ConfigError
from shared.phone import normalize_number

LLM_PROVIDERS = ("openai", "deepseek", "ollama", "mock")


@dataclass(frozen=True)
class Settings:
    llm_provider: str
    llm_api_key: str = field(repr=False)
    llm_model_chat: str
    llm_model_embed: str
    llm_base_url: str | None
    database_url_default: str | None = field(repr=False)
    redis_url: str = field(repr=False)
    infobip_base_url: str | None
    infobip_api_key: str = field(repr=False)
    infobip_waba_numbers: tuple[str, ...]
    webhook_verify_token: str = field(repr=False)
    app_port: int
    tenants_file: str
    log_level: str
    max_webhook_bytes: int
    db_pool_max: int = 20  # connections per tenant database per process: size it to the worker's threads
    accepted_redrive_seconds: int = 60  # an accepted task not done after this long, and not waiting, is re-driven
    accepted_max_redrives: int = 8      # then it goes to the dead-letter hash (shared/queueing/accepted.py)


def _env(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def _require(env: Mapping[str, str], name: str, why: str) -> str:
    value = _env(env, name)
    if value is None:
        raise ConfigError(f"{name} is not set ({why})")
    return value


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = _env(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}")
    return value


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], required: bool, why: str) -> str | None:
    value = _require(env, name, why) if required else _env(env, name)
    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in schemes:
        raise ConfigError(f"{name} must be a URL starting with one of: {', '.join(s + '://' for s in schemes)}")
    return value


def _log_level(env: Mapping[str, str], name: str) -> str:
    value = (_env(env, name, "INFO") or "INFO").upper()
    known = list(logging.getLevelNamesMapping())
    if value not in known:
        raise ConfigError(f"{name} must be one of {', '.join(known)}")
    return value


def _numbers(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of phone numbers, each normalised (any spelling); a bad entry is named by position."""
    raw = _env(env, name, "") or ""
    numbers: list[str] = []
    for position, entry in enumerate(raw.split(","), start=1):
        if not entry.strip():
            continue
        try:
            numbers.append(normalize_number(entry))
        except ValueError:
            raise ConfigError(f"{name}: entry #{position} is not a phone number "
                              "(comma-separated, e.g. +44 7700 900123,+1 555 0100)") from None
    return tuple(dict.fromkeys(numbers))


def load_dotenv_file(path: str = ".env") -> None:
    """Load `.env` into os.environ without overriding variables that are already set (the environment wins)."""
    if os.path.exists(path):
        from dotenv import load_dotenv

        load_dotenv(path, override=False)


def load_settings(env: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Parse and validate the settings. `env` defaults to os.environ (after loading `.env`)."""
    if env is None:
        if dotenv:
            load_dotenv_file()
        env = os.environ

    provider = (_env(env, "LLM_PROVIDER", "mock") or "mock").lower()
    if provider not in LLM_PROVIDERS:
        raise ConfigError(f"LLM_PROVIDER must be one of {', '.join(LLM_PROVIDERS)}")
    api_key = _env(env, "LLM_API_KEY", "")
    if provider in ("openai", "deepseek") and not api_key:
        raise ConfigError(f"LLM_API_KEY is not set (required by LLM_PROVIDER={provider})")
    chat_default = {"deepseek": "deepseek-chat", "ollama": "llama3.1", "mock": "mock-chat"}.get(provider, "gpt-4o-mini")
    numbers = _numbers(env, "INFOBIP_WABA_NUMBERS")

    return Settings(
        llm_provider=provider,
        llm_api_key=api_key or "",
        llm_model_chat=_env(env, "LLM_MODEL_CHAT", chat_default) or chat_default,
        llm_model_embed=_env(env, "LLM_MODEL_EMBED", "text-embedding-3-small") or "text-embedding-3-small",
        llm_base_url=_url(env, "LLM_BASE_URL", ("http", "https"), False, ""),
        database_url_default=_url(env, "DATABASE_URL_DEFAULT", ("postgres", "postgresql"), False, ""),
        redis_url=_url(env, "REDIS_URL", ("redis", "rediss", "unix", "redis+socket"), True,
                       "the Celery broker and the ingress need Redis") or "",
        infobip_base_url=_url(env, "INFOBIP_BASE_URL", ("http", "https"), False, ""),
        infobip_api_key=_env(env, "INFOBIP_API_KEY", "") or "",
        infobip_waba_numbers=numbers,
        webhook_verify_token=_require(env, "WEBHOOK_VERIFY_TOKEN", "Infobip webhooks are authenticated with it"),
        app_port=_int(env, "APP_PORT", 8080, 1, 65535),
        tenants_file=_env(env, "TENANTS_FILE", "tenants.yaml") or "tenants.yaml",
        log_level=_log_level(env, "LOG_LEVEL"),
        max_webhook_bytes=_int(env, "MAX_WEBHOOK_BYTES", 8 * 1024 * 1024, 1024, 256 * 1024 * 1024),
        db_pool_max=_int(env, "DB_POOL_MAX", 20, 1, 1000),
        accepted_redrive_seconds=_int(env, "ACCEPTED_REDRIVE_SECONDS", 60, 1, 24 * 3600),
        accepted_max_redrives=_int(env, "ACCEPTED_MAX_REDRIVES", 8, 1, 100),
    )
