"""Tenants: one WhatsApp Business number each, with its own database, LLM provider, agents and settings.

`tenants.yaml` is read once at start-up, `${ENV_VAR}` references are filled from the environment (so secrets stay
out of the file), environment defaults are merged in, and the result is validated into frozen `Tenant` objects.
Errors name the tenant and the field, never a secret value.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.errors import ConfigError, reject_unknown_keys
from shared.delivery.infobip.templates import parse_templates
from shared.config.llm import LLMSettings, parse_llm_block  # LLMSettings re-exported: callers import it from here
from shared.phone import normalize_number
from shared.config.settings import Settings

TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
VECTOR_STORES = ("pgvector", "sql_fallback")
TENANT_KEYS = {"tenant_id", "waba_number", "db_dsn", "embedding_model", "vector_store", "enabled_agents", "config",
               "llm", "infobip", "webhook_token", "http_tools", "templates",
               "embedding"}  # embedding: optional {provider, base_url, api_key}, read by shared.memory.embedders
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Output size of the embedding models we know; other models need `config.embedding_dim`.
EMBEDDING_DIMS = {
    "text-embedding-3-small": 1536,
    "text-embedding-ada-002": 1536,
    "text-embedding-3-large": 3072,
    "nomic-embed-text": 768,
    "all-minilm": 384,
    "all-MiniLM-L6-v2": 384,
    "local-minilm": 384,
    "local-hash": 256,
}


@dataclass(frozen=True)
class TenantConfig:
    business_name: str
    timezone: str
    rag_enabled: bool
    max_context_tokens: int = 3000        # prompt budget per LLM call: system + memories + history
    daily_token_budget: int | None = None # tokens per tenant-local day; None = unlimited
    max_tool_steps: int = 6               # LLM calls per turn before a graceful stop
    debounce_ms: int = 1500               # messages within this window are answered as one turn
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    waba_number: str
    db_dsn: str = field(repr=False)
    embedding_model: str
    embedding_dim: int
    vector_store: str
    enabled_agents: tuple[str, ...]
    config: TenantConfig
    llm: LLMSettings
    infobip_base_url: str
    infobip_api_key: str = field(repr=False)
    webhook_token: str | None = field(default=None, repr=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


class TenantRegistry:
    """Lookup of tenants by id and by WhatsApp number (any spelling of the number)."""

    def __init__(self, tenants: Iterable[Tenant]):
        self._by_id: dict[str, Tenant] = {}
        self._by_number: dict[str, Tenant] = {}
        databases: dict[tuple, str] = {}
        for t in tenants:
            if t.tenant_id in self._by_id:
                raise ConfigError(f"tenant {t.tenant_id}: tenant_id is used twice")
            if t.waba_number in self._by_number:
                other = self._by_number[t.waba_number].tenant_id
                raise ConfigError(f"tenant {t.tenant_id}: waba_number is already used by tenant {other}")
            key = database_identity(t.db_dsn)
            if key in databases:
                raise ConfigError(f"tenant {t.tenant_id}: db_dsn points at the database of tenant {databases[key]}")
            databases[key] = t.tenant_id
            self._by_id[t.tenant_id] = t
            self._by_number[t.waba_number] = t

    def __iter__(self):
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, tenant_id: str) -> Tenant | None:
        return self._by_id.get(tenant_id)

    def require(self, tenant_id: str) -> Tenant:
        tenant = self._by_id.get(tenant_id)
        if tenant is None:
            raise ConfigError(f"unknown tenant {tenant_id!r}")
        return tenant

    def by_number(self, number: str) -> Tenant | None:
        try:
            return self._by_number.get(normalize_number(number))
        except ValueError:
            return None


def database_identity(dsn: str) -> tuple:
    """(host, port, dbname) of a DSN, so two spellings of one database compare equal."""
    d = conninfo_to_dict(dsn)
    return (d.get("host") or "localhost", str(d.get("port") or 5432), d.get("dbname") or d.get("user") or "")


def derive_dsn(default_dsn: str, tenant_id: str) -> str:
    """The DSN of a tenant without `db_dsn`: the default server, database `wabot_<tenant_id>`."""
    return make_conninfo(default_dsn, dbname=f"wabot_{tenant_id.lower().replace('-', '_')}")


def interpolate(value: Any, env: Mapping[str, str], where: str) -> Any:
    """Replace `${NAME}` / `${NAME:-default}` in every string of a YAML tree with environment values."""
    if isinstance(value, str):
        def repl(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name in env and env[name] != "":
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{where} refers to ${{{name}}}, which is not set in the environment")

        return _ENV_REF.sub(repl, value)
    if isinstance(value, list):
        return [interpolate(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{where}.{k}") for k, v in value.items()}
    return value


def _str(doc: Mapping[str, Any], key: str, where: str, default: str | None = None, prefix: str = "") -> str | None:
    value = doc.get(key, default)
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ConfigError(f"{where}: {prefix}{key} must be a string")
    return str(value).strip() or default


_TYPED_CONFIG = {"business_name", "timezone", "rag_enabled", "max_context_tokens", "daily_token_budget",
                 "max_tool_steps", "debounce_ms"}
# The other `config:` keys, kept (validated) in TenantConfig.extra for their readers' `extra.get(key, default)`.
CONFIG_BOOLS = {"mark_read", "typing_indicator", "tool_gating"}
CONFIG_STRINGS = {"rate_limit_user", "rate_limit_tenant",              # "30/minute": parsed by shared.conversation.ratelimit
                  "unreadable_message_reply", "budget_exhausted_reply", "rate_limit_notice", "failure_reply"}
CONFIG_INTS = {"embedding_dim"}                                       # checked with the embedding model below
CONFIG_KEYS = _TYPED_CONFIG | CONFIG_BOOLS | CONFIG_STRINGS | CONFIG_INTS


def _int(cfg: Mapping[str, Any], key: str, where: str, default: int | None, lo: int, hi: int) -> int | None:
    value = cfg.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{where}: config.{key} must be a whole number between {lo} and {hi}")
    return value


def _bool(doc: Mapping[str, Any], key: str, where: str, default: bool, prefix: str = "") -> bool:
    value = doc.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {prefix}{key} must be true or false (unquoted)")
    return value


def _extra_config(cfg: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The untyped `config:` keys, type-checked; an unknown (misspelt) key is an error naming it."""
    unknown = sorted(str(k) for k in set(cfg) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown config key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(CONFIG_KEYS))})")
    extra: dict[str, Any] = {}
    for key, value in cfg.items():
        if key in _TYPED_CONFIG:
            continue
        if key in CONFIG_BOOLS:
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: config.{key} must be true or false (unquoted)")
        elif key in CONFIG_STRINGS:
            if value is None:
                continue  # `key:` with no value: the default applies
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}: config.{key} must be a non-empty string")
            value = value.strip()
        extra[key] = value
    return extra


def parse_tenant(doc: Any, settings: Settings, index: int, env: Mapping[str, str] | None = None) -> Tenant:
    if not isinstance(doc, dict):
        raise ConfigError(f"tenants[{index}] must be a mapping")
    tid = doc.get("tenant_id")
    if not isinstance(tid, str) or not TENANT_ID.match(tid):
        raise ConfigError(f"tenants[{index}]: tenant_id must be 1-63 letters, digits, '_' or '-'")
    where = f"tenant {tid}"
    reject_unknown_keys(doc, TENANT_KEYS, where)

    raw_number = doc.get("waba_number")
    if raw_number is None:
        raise ConfigError(f"{where}: waba_number is not set")
    try:
        number = normalize_number(raw_number)
    except ValueError:
        raise ConfigError(f"{where}: waba_number is not a phone number") from None
    if settings.infobip_waba_numbers:
        try:  # load_settings has normalised them already; a Settings built by hand may not have
            allowed = {normalize_number(n) for n in settings.infobip_waba_numbers}
        except ValueError:
            raise ConfigError("INFOBIP_WABA_NUMBERS has an entry that is not a phone number") from None
        if number not in allowed:
            raise ConfigError(f"{where}: waba_number is not listed in INFOBIP_WABA_NUMBERS")

    dsn = _str(doc, "db_dsn", where)
    if dsn is None:
        if not settings.database_url_default:
            raise ConfigError(f"{where}: db_dsn is not set and DATABASE_URL_DEFAULT is not set either")
        dsn = derive_dsn(settings.database_url_default, tid)
    try:
        conninfo_to_dict(dsn)
    except Exception:
        raise ConfigError(f"{where}: db_dsn is not a valid PostgreSQL connection string") from None

    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: config must be a mapping")
    extra = _extra_config(cfg, where)
    timezone = _str(cfg, "timezone", where, "UTC", "config.") or "UTC"
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: config.timezone {timezone!r} is not a known IANA time zone") from None
    config = TenantConfig(
        business_name=_str(cfg, "business_name", where, tid, "config.") or tid,
        timezone=timezone,
        rag_enabled=_bool(cfg, "rag_enabled", where, True, "config."),
        max_context_tokens=_int(cfg, "max_context_tokens", where, 3000, 200, 1_000_000),
        daily_token_budget=_int(cfg, "daily_token_budget", where, None, 1, 10**12),
        max_tool_steps=_int(cfg, "max_tool_steps", where, 6, 1, 20),
        debounce_ms=_int(cfg, "debounce_ms", where, 1500, 0, 60_000),
        extra=extra,
    )

    embedding_model = _str(doc, "embedding_model", where, settings.llm_model_embed) or settings.llm_model_embed
    llm = parse_llm_block(doc.get("llm"), settings, where=where, model_embed=embedding_model,
                          env=os.environ if env is None else env)

    dim = cfg.get("embedding_dim", EMBEDDING_DIMS.get(embedding_model))
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 16000:
        raise ConfigError(f"{where}: embedding_model {embedding_model!r} is unknown; set config.embedding_dim")

    vector_store = _str(doc, "vector_store", where, "pgvector")
    if vector_store not in VECTOR_STORES:
        raise ConfigError(f"{where}: vector_store must be one of {', '.join(VECTOR_STORES)}")

    agents = doc.get("enabled_agents", ["orchestrator", "db_agent"])
    if not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
        raise ConfigError(f"{where}: enabled_agents must be a list of agent names")

    ib = doc.get("infobip") or {}
    if not isinstance(ib, dict):
        raise ConfigError(f"{where}: infobip must be a mapping")
    ib_url = _str(ib, "base_url", f"{where} infobip", settings.infobip_base_url)
    if not ib_url:
        raise ConfigError(f"{where}: infobip.base_url is not set and INFOBIP_BASE_URL is not set either")
    if not ib_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: infobip.base_url must start with http:// or https://")
    ib_key = _str(ib, "api_key", f"{where} infobip", settings.infobip_api_key)
    if not ib_key:
        raise ConfigError(f"{where}: infobip.api_key is not set and INFOBIP_API_KEY is not set either")

    parse_templates(doc.get("templates"), where)  # validated at start-up; read via shared.delivery.infobip.templates

    return Tenant(
        tenant_id=tid,
        waba_number=number,
        db_dsn=dsn,
        embedding_model=embedding_model,
        embedding_dim=dim,
        vector_store=vector_store,
        enabled_agents=tuple(agents),
        config=config,
        llm=llm,
        infobip_base_url=ib_url.rstrip("/"),
        infobip_api_key=ib_key,
        webhook_token=_str(doc, "webhook_token", where),
        raw=doc,
    )


def parse_tenants(document: Any, settings: Settings, env: Mapping[str, str] | None = None) -> TenantRegistry:
    env = os.environ if env is None else env
    if not isinstance(document, dict) or not isinstance(document.get("tenants"), list):
        raise ConfigError("tenants file must have a top-level 'tenants:' list")
    docs = interpolate(document["tenants"], env, "tenants")
    return TenantRegistry(parse_tenant(d, settings, i, env) for i, d in enumerate(docs))


def load_tenants(settings: Settings, path: str | None = None, env: Mapping[str, str] | None = None) -> TenantRegistry:
    """Read and validate the tenants file named by TENANTS_FILE."""
    path = path or settings.tenants_file
    try:
        with open(path, encoding="utf-8") as fh:
            document = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"TENANTS_FILE: {path} does not exist (copy tenants.yaml.example)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"TENANTS_FILE: {path} is not valid YAML ({exc.__class__.__name__})") from None
    registry = parse_tenants(document, settings, env)
    if len(registry) == 0:
        raise ConfigError(f"TENANTS_FILE: {path} defines no tenants")
    return registry
