"""Tenants: one WhatsApp Business number each, with its own database, LLM provider, agents and settings.

`tenants.yaml` is read once at start-up, `${ENV_VAR}` references are filled from the environment (so secrets stay
out of the file), environment defaults are merged in, and the result is validated into frozen `Tenant` objects.
Errors name the tenant and the field, never a secret value; every mistake of the file is collected (one section
of an entry failing does not stop the others) and raised at once as a TenantFileError, each with its YAML line.
The `config:` and `embedding:` blocks are declared in shared.config.tenant_schema.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping
from zoneinfo import ZoneInfo

import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.config.http_tools import HttpToolSpec, parse_http_tool_specs
from shared.errors import ConfigError
from shared.delivery.infobip.templates import Template, parse_templates
from shared.config.tenant_schema import (CONFIG_KEYS, ConfigSchema, ConfirmSchema, ConfirmSettings, EmbeddingEndpoint,
                                         EmbeddingSchema, FieldError, HandoffSchema, HandoffSettings, Issue,
                                         OptOutSchema, OptOutSettings, Path, TenantFileError, confirm_settings,
                                         embedding_endpoint, handoff_settings, load_block, opt_out_settings)
# CONFIG_KEYS (the accepted `config:` keys) is re-exported: callers import it from here
from shared.config.yaml_lines import describe_yaml_error, line_of, load_with_lines
from shared.config.llm import LLMSettings, parse_llm_block  # LLMSettings re-exported: callers import it from here
from shared.config.prices import ModelPrice, parse_prices
from shared.phone import normalize_number
from shared.config.settings import Settings, environment
from shared.tools.mcp.spec import SEPARATOR, McpServerSpec, parse_mcp_servers

TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
VECTOR_STORES = ("pgvector", "sql_fallback")
TENANT_KEYS = {"tenant_id", "waba_number", "db_dsn", "embedding_model", "vector_store", "enabled_agents", "config",
               "llm", "infobip", "webhook_token", "http_tools", "templates",
               "embedding", "handoff", "opt_out",  # embedding: optional {provider, base_url, api_key}, see tenant_schema.EmbeddingSchema
               "mcp_servers", "confirm"}  # shared.tools.mcp.spec; confirm: tenant_schema.ConfirmSchema
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
    "wordllama-256": 256,
}


@dataclass(frozen=True)
class TenantConfig:
    """`config:`, typed; each default and range is declared once, in tenant_schema.ConfigSchema."""

    business_name: str
    timezone: str
    rag_enabled: bool
    knowledge_passages: int               # business passages per prompt (0: knowledge not searched per turn)
    knowledge_min_similarity: float       # a passage grounds an answer at this cosine similarity to the question
    knowledge_min_coverage: float         # ... or when it holds this share of the question's words
    max_context_tokens: int               # prompt budget per LLM call: system + memories + history
    history_budget_tokens: int            # recent history per prompt (tool schemas are counted apart)
    summary_max_tokens: int               # the rolling summary of older history (0: none)
    smalltalk_history_tokens: int         # history of a small-talk prompt
    smalltalk_memory_min_score: float     # small talk carries a memory only this relevant
    daily_token_budget: int | None        # tokens per tenant-local day; None = unlimited
    max_tool_steps: int                   # LLM calls per turn before a graceful stop
    debounce_ms: int                      # messages within this window are answered as one turn
    rate_limit_user: str                  # `limits` notation, read by shared.conversation.ratelimit
    rate_limit_tenant: str
    mark_read: bool                       # blue ticks on each inbound message
    typing_indicator: bool
    tool_gating: bool                     # False: every enabled tool on every turn
    prefetch_reads: bool                  # a sure read runs before the first model call (conversation.prefetch)
    unreadable_message_reply: str | None  # None: the built-in text of each reply
    budget_exhausted_reply: str | None
    rate_limit_notice: str | None
    failure_reply: str | None

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
    templates: Mapping[str, Template] = field(default_factory=dict)
    embedding: EmbeddingEndpoint = field(default_factory=EmbeddingEndpoint)
    http_tools: tuple[HttpToolSpec, ...] = field(default=(), repr=False)  # headers hold secrets
    handoff: HandoffSettings = field(default_factory=HandoffSettings, repr=False)  # webhook secret
    opt_out: OptOutSettings = field(default_factory=OptOutSettings)
    mcp_servers: tuple[McpServerSpec, ...] = field(default=(), repr=False)  # env and headers hold secrets
    confirm: ConfirmSettings = field(default_factory=ConfirmSettings)
    prices: Mapping[str, ModelPrice] = field(default_factory=dict)  # per model: the file's `prices:` + `llm.prices:`


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


def interpolate(value: Any, env: Mapping[str, str], where: str, path: Path = ()) -> Any:
    """Replace `${NAME}` / `${NAME:-default}` in every string of a YAML tree with environment values."""
    if isinstance(value, str):
        def repl(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name in env and env[name] != "":
                return env[name]
            if default is not None:
                return default
            raise FieldError(f"{where} refers to ${{{name}}}, which is not set in the environment", path)

        return _ENV_REF.sub(repl, value)
    if isinstance(value, list):
        return [interpolate(v, env, f"{where}[{i}]", path + (i,)) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{where}.{k}", path + (k,)) for k, v in value.items()}
    return value


def _str(doc: Mapping[str, Any], key: str, where: str, default: str | None = None, prefix: str = "") -> str | None:
    value = doc.get(key, default)
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise FieldError(f"{where}: {prefix}{key} must be a string", (key,))
    return str(value).strip() or default


class _Issues:
    """The mistakes of one tenant entry, each at its path; a section that fails does not stop the others."""

    def __init__(self, index: int):
        self.prefix: Path = ("tenants", index)
        self.found: list[Issue] = []

    def add(self, err: ConfigError, path: Path = ()) -> None:
        self.found.append(Issue(self.prefix + (getattr(err, "path", ()) or path), str(err)))

    def run(self, path: Path, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs), or None with the ConfigError it raised recorded at `path` (or the error's own)."""
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            self.add(exc, path)
            return None


def _number(doc: Mapping[str, Any], settings: Settings, where: str) -> str:
    if doc.get("waba_number") is None:
        raise ConfigError(f"{where}: waba_number is not set")
    try:
        number = normalize_number(doc["waba_number"])
    except ValueError:
        raise ConfigError(f"{where}: waba_number is not a phone number") from None
    if settings.infobip_waba_numbers:
        try:  # load_settings has normalised them already; a Settings built by hand may not have
            allowed = {normalize_number(n) for n in settings.infobip_waba_numbers}
        except ValueError:
            raise ConfigError("INFOBIP_WABA_NUMBERS has an entry that is not a phone number") from None
        if number not in allowed:
            raise ConfigError(f"{where}: waba_number is not listed in INFOBIP_WABA_NUMBERS")
    return number


def _dsn(doc: Mapping[str, Any], settings: Settings, tid: str, where: str) -> str:
    dsn = _str(doc, "db_dsn", where)
    if dsn is None:
        if not settings.database_url_default:
            raise ConfigError(f"{where}: db_dsn is not set and DATABASE_URL_DEFAULT is not set either")
        dsn = derive_dsn(settings.database_url_default, tid)
    try:
        conninfo_to_dict(dsn)
    except Exception:
        raise ConfigError(f"{where}: db_dsn is not a valid PostgreSQL connection string") from None
    return dsn


def _config(block: Any, tid: str, where: str, out: _Issues) -> tuple[TenantConfig | None, int | None]:
    """`config:` as a TenantConfig (None when wrong) and its `embedding_dim` (checked with the model later)."""
    values, errors = load_block(ConfigSchema(), block, "config", where)
    for err in errors:
        out.add(err)
    if errors:
        return None, None
    dim = values.pop("embedding_dim")
    values["business_name"] = values["business_name"] or tid
    values["timezone"] = values["timezone"] or "UTC"
    return TenantConfig(**values), dim


def _dim(dim: int | None, model: str, where: str) -> int:
    dim = dim or EMBEDDING_DIMS.get(model)
    if dim is None:
        raise FieldError(f"{where}: embedding_model {model!r} is unknown; set config.embedding_dim",
                         ("embedding_model",))
    return dim


def _choices(doc: Mapping[str, Any], where: str) -> tuple[str, tuple[str, ...]]:
    vector_store = _str(doc, "vector_store", where, "pgvector")
    if vector_store not in VECTOR_STORES:
        raise FieldError(f"{where}: vector_store must be one of {', '.join(VECTOR_STORES)}", ("vector_store",))
    agents = doc.get("enabled_agents", ["orchestrator", "db_agent"])
    if not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
        raise FieldError(f"{where}: enabled_agents must be a list of agent names", ("enabled_agents",))
    return vector_store, tuple(agents)


def _infobip(block: Any, settings: Settings, where: str) -> tuple[str, str]:
    ib = block or {}
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
    return ib_url.rstrip("/"), ib_key


def _embedding(block: Any, where: str, out: _Issues) -> EmbeddingEndpoint | None:
    values, errors = load_block(EmbeddingSchema(), block, "embedding", where)
    for err in errors:
        out.add(err)
    return None if errors else embedding_endpoint(values)


def _handoff(block: Any, where: str, out: _Issues) -> HandoffSettings | None:
    values, errors = load_block(HandoffSchema(), block, "handoff", where)
    for err in errors:
        out.add(err)
    return None if errors else out.run(("handoff",), handoff_settings, values, where)


def _opt_out(block: Any, where: str, out: _Issues) -> OptOutSettings | None:
    values, errors = load_block(OptOutSchema(), block, "opt_out", where)
    for err in errors:
        out.add(err)
    return None if errors else opt_out_settings(values)


def _confirm(block: Any, where: str, out: _Issues) -> ConfirmSettings | None:
    values, errors = load_block(ConfirmSchema(), block, "confirm", where)
    for err in errors:
        out.add(err)
    return None if errors else confirm_settings(values)


def _check_confirm(confirm: ConfirmSettings, http_tools: tuple[HttpToolSpec, ...],
                   mcp_servers: tuple[McpServerSpec, ...], where: str) -> None:
    """Each tool `confirm.tools` names is one of the tenant's HTTP tools or `<server>__<tool>` of one of its MCP
    servers (whose tools are only known once the server answers)."""
    known = {t.name for t in http_tools}
    prefixes = tuple(s.name + SEPARATOR for s in mcp_servers)
    unknown = sorted(n for n in confirm.tools if n not in known and not (prefixes and n.startswith(prefixes)))
    if unknown:
        raise FieldError(f"{where}: confirm.tools names unknown tool(s) {', '.join(unknown)} (an HTTP tool, or "
                         "<server>__<tool> of an MCP server)", ("confirm", "tools"))


def _entry(doc: Any, index: int, env: Mapping[str, str], out: _Issues) -> tuple[str, dict] | None:
    """The tenant id and the interpolated entry, or None (recorded) when there is no usable id."""
    if not isinstance(doc, dict):
        out.add(ConfigError(f"tenants[{index}] must be a mapping"))
        return None
    doc = out.run((), interpolate, doc, env, f"tenants[{index}]")
    if doc is None:
        return None
    tid = doc.get("tenant_id")
    if not isinstance(tid, str) or not TENANT_ID.match(tid):
        out.add(ConfigError(f"tenants[{index}]: tenant_id must be 1-63 letters, digits, '_' or '-'"), ("tenant_id",))
        return None
    return tid, doc


def _llm_prices(block: Any, where: str, out: _Issues) -> tuple[Any, dict[str, ModelPrice]]:
    """The `llm:` block without its `prices:` (shared.config.prices), and those prices (mistakes recorded)."""
    if not isinstance(block, dict) or "prices" not in block:
        return block, {}
    block = dict(block)
    prices, errors = parse_prices(block.pop("prices"), f"{where}: llm.prices", ("llm", "prices"))
    for err in errors:
        out.add(err)
    return block, prices


def parse_tenant(doc: Any, settings: Settings, index: int, out: _Issues, env: Mapping[str, str],
                 prices: Mapping[str, ModelPrice] | None = None) -> Tenant | None:
    """One entry of `tenants:`: the Tenant, or None with every mistake found in it recorded in `out`. `prices`:
    the file's top-level ones, which the tenant's `llm.prices` extend."""
    entry = _entry(doc, index, env, out)
    if entry is None:
        return None
    tid, doc = entry
    where, before = f"tenant {tid}", len(out.found)
    for key in sorted(str(k) for k in set(doc) - TENANT_KEYS):
        out.add(ConfigError(f"{where}: unknown field(s) {key}"), (key,))
    number = out.run(("waba_number",), _number, doc, settings, where)
    dsn = out.run(("db_dsn",), _dsn, doc, settings, tid, where)
    config, dim = _config(doc.get("config"), tid, where, out)
    model = out.run((), _str, doc, "embedding_model", where, settings.llm_model_embed) or settings.llm_model_embed
    llm_block, own_prices = _llm_prices(doc.get("llm"), where, out)
    llm = out.run(("llm",), parse_llm_block, llm_block, settings, where=where, model_embed=model, env=env)
    dim = out.run((), _dim, dim, model, where)
    choices = out.run((), _choices, doc, where)
    infobip = out.run(("infobip",), _infobip, doc.get("infobip"), settings, where)
    templates = out.run(("templates",), parse_templates, doc.get("templates"), where)
    embedding = _embedding(doc.get("embedding"), where, out)
    webhook_token = out.run((), _str, doc, "webhook_token", where)
    http_tools = out.run(("http_tools",), parse_http_tool_specs, doc.get("http_tools"), tid)
    handoff, opt_out = _handoff(doc.get("handoff"), where, out), _opt_out(doc.get("opt_out"), where, out)
    mcp_servers = out.run(("mcp_servers",), parse_mcp_servers, doc.get("mcp_servers"), tid)
    confirm = _confirm(doc.get("confirm"), where, out)
    if confirm is not None and http_tools is not None and mcp_servers is not None:
        out.run(("confirm",), _check_confirm, confirm, http_tools, mcp_servers, where)
    if len(out.found) > before:
        return None
    return Tenant(tenant_id=tid, waba_number=number, db_dsn=dsn, embedding_model=model, embedding_dim=dim,
                  vector_store=choices[0], enabled_agents=choices[1], config=config, llm=llm,
                  infobip_base_url=infobip[0], infobip_api_key=infobip[1], webhook_token=webhook_token,
                  templates=templates, embedding=embedding, http_tools=http_tools, handoff=handoff,
                  opt_out=opt_out, mcp_servers=mcp_servers, confirm=confirm, prices={**(prices or {}), **own_prices})


def parse_tenants(document: Any, settings: Settings, env: Mapping[str, str] | None = None,
                  lines: Mapping[Path, int] | None = None) -> TenantRegistry:
    """Every tenant of the file; TenantFileError lists every mistake, each with its YAML line when `lines` has it."""
    env = environment() if env is None else env
    if not isinstance(document, dict) or not isinstance(document.get("tenants"), list):
        raise ConfigError("tenants file must have a top-level 'tenants:' list")
    prices, errors = parse_prices(document.get("prices"), "prices", ("prices",))
    tenants, issues = [], [Issue(e.path, str(e), line_of(lines or {}, e.path)) for e in errors]
    for index, doc in enumerate(document["tenants"]):
        out = _Issues(index)
        tenants.append(parse_tenant(doc, settings, index, out, env, prices))
        issues += [dataclasses.replace(i, line=line_of(lines or {}, i.path)) for i in out.found]
    if issues:
        raise TenantFileError(issues)
    return TenantRegistry(tenants)


def read_tenants_file(path: str) -> tuple[Any, dict[Path, int]]:
    """The document of a tenants file and the line of each of its fields; a ConfigError naming the file (and the
    line, for a YAML syntax error)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return load_with_lines(fh.read())
    except FileNotFoundError:
        raise ConfigError(f"TENANTS_FILE: {path} does not exist (copy tenants.yaml.example)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"TENANTS_FILE: {path} is not valid YAML ({describe_yaml_error(exc)})") from None


def load_tenants_with_lines(settings: Settings, path: str | None = None,
                            env: Mapping[str, str] | None = None) -> tuple[TenantRegistry, dict[Path, int]]:
    """The tenants of the file named by TENANTS_FILE, and the line of each field (for later checks' errors)."""
    path = path or settings.tenants_file
    document, lines = read_tenants_file(path)
    registry = parse_tenants(document, settings, env, lines)
    if len(registry) == 0:
        raise ConfigError(f"TENANTS_FILE: {path} defines no tenants")
    return registry, lines


def load_tenants(settings: Settings, path: str | None = None, env: Mapping[str, str] | None = None) -> TenantRegistry:
    """Read and validate the tenants file named by TENANTS_FILE."""
    return load_tenants_with_lines(settings, path, env)[0]
