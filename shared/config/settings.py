"""Process-wide settings, read once from the environment (and a `.env` file) into a typed object.

Every ingress and worker process calls :func:`load_settings` (or :func:`current_settings`, the same, read once per
process) at start-up; nothing else reads the environment, except the tenants file's own `${VAR}` and `api_key_envs`
syntax, which gets it from :func:`environment`. Every missing or malformed value is reported at once, in one
:class:`ConfigError` naming each variable, never its value. An empty value (`NAME=` in `.env`, as `.env.example`
has) counts as unset: the default applies, or a required variable is reported missing.

The settings are flat attributes (so `dataclasses.replace(settings, redis_url=...)` works) with read-only views
grouped by concern: `web`, `broker`, `database`, `infobip`, `llm`, `embeddings`.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, TypeVar
from urllib.parse import urlparse

from shared.errors import ConfigError
from shared.phone import normalize_number

LLM_PROVIDERS = ("openai", "deepseek", "ollama", "vllm", "llamacpp", "mock")
DEFAULT_MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
DEFAULT_INFOBIP_RETRY_BASE = 2.0  # seconds: the first wait of an Infobip send's backoff (infobip/retry.py)
QUEUES = ("inbound", "outbound", "events", "scheduled", "knowledge", "summaries")  # = shared/queueing/tasks.py QUEUES
# A missing summary worker delays no reply: readiness does not wait for one unless READY_QUEUES names it.
READY_QUEUES_DEFAULT = tuple(q for q in QUEUES if q != "summaries")
T = TypeVar("T")


@dataclass(frozen=True)
class WebSettings:
    """The ingress under gunicorn (ingress/gunicorn.conf.py)."""
    host: str
    port: int
    concurrency: int
    worker_class: str
    worker_connections: int
    keepalive: int
    max_webhook_bytes: int


@dataclass(frozen=True)
class BrokerSettings:
    """Redis as the Celery broker, the Celery timings (shared/queueing/celery_config.py) and accepted-work re-drive."""
    redis_url: str = field(repr=False)
    visibility_timeout: int
    restore_interval: int
    reminder_dispatch_seconds: int
    accepted_sweep_seconds: int
    recovery_sweep_seconds: int
    accepted_redrive_seconds: int
    accepted_max_redrives: int


@dataclass(frozen=True)
class DatabaseSettings:
    url_default: str | None = field(repr=False)
    pool_max: int
    migrations_dir: Path


@dataclass(frozen=True)
class InfobipSettings:
    base_url: str | None
    api_key: str = field(repr=False)
    waba_numbers: tuple[str, ...]
    webhook_verify_token: str = field(repr=False)
    retry_base_seconds: float


@dataclass(frozen=True)
class LLMDefaults:
    """The environment's LLM defaults; a tenant's effective LLM settings are shared/config/llm.py's LLMSettings."""
    provider: str
    api_key: str = field(repr=False)
    model_chat: str
    model_embed: str
    base_url: str | None


@dataclass(frozen=True)
class EmbeddingSettings:
    api_key: str = field(repr=False)  # EMBEDDING_API_KEY: OpenAI embeddings for tenants whose chat is not OpenAI


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
    app_host: str = "0.0.0.0"
    web_concurrency: int = 2
    web_worker_class: str = "gevent"
    web_worker_connections: int = 1000
    web_keepalive: int = 5
    celery_visibility_timeout: int = 360
    celery_restore_interval: int = 10
    celery_task_events: bool = False    # Celery task events (Flower's live view): off, ~1/4 of a webhook's CPU
    reminder_dispatch_seconds: int = 30
    accepted_sweep_seconds: int = 30
    recovery_sweep_seconds: int = 60
    infobip_retry_base_seconds: float = DEFAULT_INFOBIP_RETRY_BASE
    migrations_dir: Path = DEFAULT_MIGRATIONS_DIR
    embedding_api_key: str = field(default="", repr=False)
    metrics_token: str = field(default="", repr=False)  # METRICS_TOKEN: Bearer token of GET /metrics (else private nets)
    worker_metrics_port: int = 0        # WORKER_METRICS_PORT: a Celery worker's exporter port (0: none)
    worker_metrics_host: str = "127.0.0.1"
    ready_queues: tuple[str, ...] = READY_QUEUES_DEFAULT  # queues /ready needs a live worker for

    @property
    def web(self) -> WebSettings:
        return WebSettings(self.app_host, self.app_port, self.web_concurrency, self.web_worker_class,
                           self.web_worker_connections, self.web_keepalive, self.max_webhook_bytes)

    @property
    def broker(self) -> BrokerSettings:
        return BrokerSettings(self.redis_url, self.celery_visibility_timeout, self.celery_restore_interval,
                              self.reminder_dispatch_seconds, self.accepted_sweep_seconds,
                              self.recovery_sweep_seconds, self.accepted_redrive_seconds, self.accepted_max_redrives)

    @property
    def database(self) -> DatabaseSettings:
        return DatabaseSettings(self.database_url_default, self.db_pool_max, self.migrations_dir)

    @property
    def infobip(self) -> InfobipSettings:
        return InfobipSettings(self.infobip_base_url, self.infobip_api_key, self.infobip_waba_numbers,
                               self.webhook_verify_token, self.infobip_retry_base_seconds)

    @property
    def llm(self) -> LLMDefaults:
        return LLMDefaults(self.llm_provider, self.llm_api_key, self.llm_model_chat, self.llm_model_embed,
                           self.llm_base_url)

    @property
    def embeddings(self) -> EmbeddingSettings:
        return EmbeddingSettings(self.embedding_api_key)


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


def _seconds(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole number of seconds, 1 or more (the Celery timings)."""
    raw = _env(env, name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a whole number of seconds (1 or more)")
    return int(raw)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no switch: 1/true/yes/on or 0/false/no/off (any case); unset or empty is the default."""
    raw = (_env(env, name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1/true/yes/on or 0/false/no/off")


def infobip_retry_base(env: Mapping[str, str], name: str = "INFOBIP_RETRY_BASE_SECONDS") -> float:
    """INFOBIP_RETRY_BASE_SECONDS: the first backoff step of an Infobip send (the tests make it short)."""
    raw = _env(env, name)
    if raw is None:
        return DEFAULT_INFOBIP_RETRY_BASE
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds") from None
    if not 0 < value <= 600:
        raise ConfigError(f"{name} must be greater than 0 and at most 600")
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


def _queues(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of queue names (READY_QUEUES); empty: readiness waits for no worker."""
    raw = _env(env, name)
    if raw is None:
        return READY_QUEUES_DEFAULT
    queues = tuple(dict.fromkeys(q.strip() for q in raw.split(",") if q.strip()))
    unknown = [q for q in queues if q not in QUEUES]
    if unknown:
        raise ConfigError(f"{name}: unknown queue {unknown[0]!r} (known: {', '.join(QUEUES)})")
    return queues


def _provider(env: Mapping[str, str], name: str) -> str:
    provider = (_env(env, name, "mock") or "mock").lower()
    if provider not in LLM_PROVIDERS:
        raise ConfigError(f"{name} must be one of {', '.join(LLM_PROVIDERS)}")
    return provider


def _api_key(env: Mapping[str, str], name: str, provider: str) -> str:
    api_key = _env(env, name, "") or ""
    if provider in ("openai", "deepseek") and not api_key:
        raise ConfigError(f"{name} is not set (required by LLM_PROVIDER={provider})")
    return api_key


def embedding_api_key(env: Mapping[str, str]) -> str:
    """EMBEDDING_API_KEY, or "" (shared/memory/embedders.py falls back to it)."""
    return _env(env, "EMBEDDING_API_KEY", "") or ""


class _Collector:
    """Reads variables, keeping every ConfigError so that one run reports all of them."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []

    def read(self, parse: Callable[..., T], *args: object, fallback: T) -> T:
        try:
            return parse(self.env, *args)
        except ConfigError as exc:
            self.errors.append(str(exc))
            return fallback

    def raise_if_any(self) -> None:
        if len(self.errors) == 1:
            raise ConfigError(self.errors[0])
        if self.errors:
            raise ConfigError(f"{len(self.errors)} settings are wrong:\n" + "\n".join(f"- {e}" for e in self.errors))


def load_dotenv_file(path: str = ".env") -> None:
    """Load `.env` into os.environ without overriding variables that are already set (the environment wins)."""
    if os.path.exists(path):
        from dotenv import load_dotenv

        load_dotenv(path, override=False)


def environment(dotenv: bool = False) -> Mapping[str, str]:
    """The process environment (after loading `.env` if asked): the one place it is read. Besides load_settings,
    only the tenants file's `${VAR}` and `api_key_envs` syntax and EMBEDDING_API_KEY defaults use it."""
    if dotenv:
        load_dotenv_file()
    return os.environ


def load_settings(env: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Parse and validate the settings. `env` defaults to os.environ (after loading `.env`)."""
    env = environment(dotenv) if env is None else env
    c = _Collector(env)
    provider = c.read(_provider, "LLM_PROVIDER", fallback="mock")
    chat_default = {"deepseek": "deepseek-chat", "ollama": "llama3.1", "mock": "mock-chat"}.get(provider, "gpt-4o-mini")
    settings = Settings(
        llm_provider=provider,
        llm_api_key=c.read(_api_key, "LLM_API_KEY", provider, fallback=""),
        llm_model_chat=_env(env, "LLM_MODEL_CHAT", chat_default) or chat_default,
        llm_model_embed=_env(env, "LLM_MODEL_EMBED", "text-embedding-3-small") or "text-embedding-3-small",
        llm_base_url=c.read(_url, "LLM_BASE_URL", ("http", "https"), False, "", fallback=None),
        database_url_default=c.read(_url, "DATABASE_URL_DEFAULT", ("postgres", "postgresql"), False, "",
                                    fallback=None),
        redis_url=c.read(_url, "REDIS_URL", ("redis", "rediss", "unix", "redis+socket"), True,
                         "the Celery broker and the ingress need Redis", fallback="") or "",
        infobip_base_url=c.read(_url, "INFOBIP_BASE_URL", ("http", "https"), False, "", fallback=None),
        infobip_api_key=_env(env, "INFOBIP_API_KEY", "") or "",
        infobip_waba_numbers=c.read(_numbers, "INFOBIP_WABA_NUMBERS", fallback=()),
        webhook_verify_token=c.read(_require, "WEBHOOK_VERIFY_TOKEN", "Infobip webhooks are authenticated with it",
                                    fallback=""),
        app_port=c.read(_int, "APP_PORT", 8080, 1, 65535, fallback=8080),
        tenants_file=_env(env, "TENANTS_FILE", "tenants.yaml") or "tenants.yaml",
        log_level=c.read(_log_level, "LOG_LEVEL", fallback="INFO"),
        max_webhook_bytes=c.read(_int, "MAX_WEBHOOK_BYTES", 8 * 1024 * 1024, 1024, 256 * 1024 * 1024, fallback=0),
        db_pool_max=c.read(_int, "DB_POOL_MAX", 20, 1, 1000, fallback=20),
        accepted_redrive_seconds=c.read(_int, "ACCEPTED_REDRIVE_SECONDS", 60, 1, 24 * 3600, fallback=60),
        accepted_max_redrives=c.read(_int, "ACCEPTED_MAX_REDRIVES", 8, 1, 100, fallback=8),
        app_host=_env(env, "APP_HOST", "0.0.0.0") or "0.0.0.0",
        web_concurrency=c.read(_int, "WEB_CONCURRENCY", 2, 1, 1024, fallback=2),
        web_worker_class=_env(env, "WEB_WORKER_CLASS", "gevent") or "gevent",
        web_worker_connections=c.read(_int, "WEB_WORKER_CONNECTIONS", 1000, 1, 1_000_000, fallback=1000),
        # 0 would turn keep-alive off, and with it gevent's deadline for reading a request's headers: at least 1 s
        web_keepalive=max(1, c.read(_int, "WEB_KEEPALIVE", 5, -1_000_000, 3600, fallback=5)),
        celery_visibility_timeout=c.read(_seconds, "CELERY_VISIBILITY_TIMEOUT", 360, fallback=360),
        celery_restore_interval=c.read(_seconds, "CELERY_RESTORE_INTERVAL", 10, fallback=10),
        celery_task_events=c.read(_flag, "CELERY_TASK_EVENTS", False, fallback=False),
        reminder_dispatch_seconds=c.read(_seconds, "REMINDER_DISPATCH_SECONDS", 30, fallback=30),
        accepted_sweep_seconds=c.read(_seconds, "ACCEPTED_SWEEP_SECONDS", 30, fallback=30),
        recovery_sweep_seconds=c.read(_seconds, "RECOVERY_SWEEP_SECONDS", 60, fallback=60),
        infobip_retry_base_seconds=c.read(infobip_retry_base, fallback=DEFAULT_INFOBIP_RETRY_BASE),
        migrations_dir=Path(_env(env, "WABOT_MIGRATIONS_DIR") or DEFAULT_MIGRATIONS_DIR),
        embedding_api_key=embedding_api_key(env),
        metrics_token=_env(env, "METRICS_TOKEN", "") or "",
        worker_metrics_port=c.read(_int, "WORKER_METRICS_PORT", 0, 0, 65535, fallback=0),
        worker_metrics_host=_env(env, "WORKER_METRICS_HOST", "127.0.0.1") or "127.0.0.1",
        ready_queues=c.read(_queues, "READY_QUEUES", fallback=READY_QUEUES_DEFAULT),
    )
    c.raise_if_any()
    return settings


@functools.cache
def current_settings() -> Settings:
    """This process's settings, read on first use and then kept: the workers' Celery app, logging and runtime share
    them, and importing a worker module reads nothing."""
    return load_settings()
