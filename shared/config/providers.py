"""Which provider a tenant uses right now: environment < tenants.yaml < the active `llm_providers` row.

tenants.yaml (with the environment defaults merged in) is read once at start-up into `tenant.llm`; the tenant's
`llm_providers` table can be changed while workers run (`wabot providers set-active`). The active row replaces
the yaml block as a whole (its own keys, URL and fallback row); timeout, max_retries, max_tokens, turn_seconds and
circuit_seconds stay the yaml's, since the table has no columns for them. Usage rows name the row that answered.
Rows store names of environment variables, never keys, and only names the api_key_envs allowlist accepts
(shared.config.llm.key_env_problem): a row cannot borrow INFOBIP_API_KEY or a webhook token as a Bearer key for
its own base_url.
`ProviderCache` re-reads the table at most every `ttl_seconds` per tenant, so a change reaches running workers
within the TTL, and keeps the same provider object while the settings stay equal (key cool-downs survive).
A row that cannot be used (it names a variable not set in the workers' environment, an unknown fallback ...) does
not stop the tenant's turns: `get` logs the error (never a key) at most once per TTL and keeps the provider it had,
or, with none yet, uses the tenant's tenants.yaml settings (`tenant.llm`) until the row is fixed.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from psycopg.rows import dict_row

from shared.errors import ConfigError
from shared.llm.base import LLMProvider
from shared.llm.factory import provider_for
from shared.config.llm import PROVIDERS_NEEDING_KEY, LLMSettings, default_chat_model, keys_from_envs
from shared.config.settings import LLM_PROVIDERS, environment

from shared.config.tenants import EMBEDDING_DIMS, Tenant

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

ROW_COLUMNS = "name, provider, base_url, model_chat, model_embed, api_key_envs, fallback, is_active"


def active_row(conn: "psycopg.Connection") -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {ROW_COLUMNS} FROM llm_providers WHERE is_active").fetchone()


def row_by_name(conn: "psycopg.Connection", name: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {ROW_COLUMNS} FROM llm_providers WHERE name = %s", (name,)).fetchone()


def settings_from_row(row: Mapping[str, Any], tenant: Tenant, env: Mapping[str, str],
                      fallback: LLMSettings | None = None) -> LLMSettings:
    """An `llm_providers` row as LLMSettings; errors name the tenant, the row and the variable, never a key.
    Every name in api_key_envs passes the allowlist before any variable is read (keys_from_envs)."""
    where = f"tenant {tenant.tenant_id}: llm_providers row {row['name']!r}"
    provider = (row["provider"] or "").strip().lower()
    if provider not in LLM_PROVIDERS:
        raise ConfigError(f"{where}: provider must be one of {', '.join(LLM_PROVIDERS)}")
    keys = keys_from_envs(list(row["api_key_envs"] or []), env, where)
    if provider in PROVIDERS_NEEDING_KEY and not keys:
        raise ConfigError(f"{where}: provider {provider} needs a key; name its variable in api_key_envs")
    model_embed = row["model_embed"] or tenant.embedding_model
    if EMBEDDING_DIMS.get(model_embed, tenant.embedding_dim) != tenant.embedding_dim:
        raise ConfigError(f"{where}: model_embed {model_embed} does not make {tenant.embedding_dim}-dimensional "
                          f"vectors like the tenant's embedding_model")
    model_chat = row["model_chat"] or default_chat_model(provider)
    if not model_chat:
        raise ConfigError(f"{where}: model_chat is not set: provider {provider} serves the model it was started "
                          f"with; name it in the row")
    return LLMSettings(
        provider=provider,
        model_chat=model_chat,
        model_embed=model_embed,
        base_url=row["base_url"] or None,
        api_key=keys[0] if keys else "",
        api_keys=keys,
        fallback=fallback,
        timeout=tenant.llm.timeout,
        max_retries=tenant.llm.max_retries,
        source=f"llm_providers:{row['name']}",
        name=row["name"],
        max_tokens=tenant.llm.max_tokens,
        turn_seconds=tenant.llm.turn_seconds,
        circuit_seconds=tenant.llm.circuit_seconds,
    )


def resolve_llm(tenant: Tenant, conn: "psycopg.Connection", env: Mapping[str, str] | None = None) -> LLMSettings:
    """The tenant's effective LLM settings: the active row of its llm_providers table, else tenant.llm.

    A row's `fallback` names another row (one level: that row's own fallback is not followed).
    """
    env = environment() if env is None else env
    row = active_row(conn)
    if row is None:
        return tenant.llm
    fallback = None
    if row["fallback"]:
        fb_row = row_by_name(conn, row["fallback"])
        if fb_row is None:
            raise ConfigError(f"tenant {tenant.tenant_id}: llm_providers row {row['name']!r} names fallback "
                              f"{row['fallback']!r}, which is not a row of llm_providers")
        fallback = settings_from_row(fb_row, tenant, env)
    return settings_from_row(row, tenant, env, fallback)


@dataclass
class _Entry:
    settings: LLMSettings
    provider: LLMProvider
    checked_at: float
    error: str | None = None   # the ConfigError that made this entry a stand-in, while it lasts


class ProviderCache:
    """Per-tenant providers for a long-running, threaded worker; the table is re-read at most every TTL."""

    def __init__(self, ttl_seconds: float = 30.0, *, clock: Callable[[], float] = time.monotonic,
                 build: Callable[[LLMSettings], LLMProvider] = provider_for, env: Mapping[str, str] | None = None):
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds must be >= 0")
        self.ttl = ttl_seconds
        self._clock, self._build, self._env = clock, build, env
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def get(self, tenant: Tenant, conn: "psycopg.Connection") -> LLMProvider:
        """The tenant's provider. Reads `conn` only when the cached one is older than the TTL."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(tenant.tenant_id)
        if entry is not None and now - entry.checked_at < self.ttl:
            return entry.provider
        try:
            settings = resolve_llm(tenant, conn, self._env)  # outside the lock: a DB round trip
        except ConfigError as exc:
            return self._stand_in(tenant, now, str(exc))
        with self._lock:
            entry = self._entries.get(tenant.tenant_id)
            if entry is not None and entry.settings == settings:
                entry.checked_at = now  # unchanged: keep the provider (and its keys' cool-downs)
                entry.error = None
                return entry.provider
            provider = self._build(settings)
            self._entries[tenant.tenant_id] = _Entry(settings, provider, now)
        log.info("LLM provider selected", extra={"tenant_id": tenant.tenant_id, "llm_source": settings.source,
                                                 "llm_provider": settings.provider, "llm_model": settings.model_chat,
                                                 "llm_fallback": settings.fallback.provider if settings.fallback
                                                 else None})
        return provider

    def _stand_in(self, tenant: Tenant, now: float, error: str) -> LLMProvider:
        """The provider to use while the active row is unusable: the one we had, else tenants.yaml's.

        Called once per TTL at most per tenant (the entry's checked_at is renewed), so the error is logged once
        per TTL. ConfigError messages name the tenant, row and variable, never a key.
        """
        with self._lock:
            entry = self._entries.get(tenant.tenant_id)
            if entry is None:
                entry = _Entry(tenant.llm, self._build(tenant.llm), now)
                self._entries[tenant.tenant_id] = entry
            entry.checked_at = now
            entry.error = error
            kept = entry.settings
        log.error("LLM provider row unusable; keeping the previous provider (or tenants.yaml) until it is fixed",
                  extra={"tenant_id": tenant.tenant_id, "error": error, "llm_source": kept.source,
                         "llm_provider": kept.provider, "llm_model": kept.model_chat})
        return entry.provider
