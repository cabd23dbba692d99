"""`wabot providers list|add|set-active`: a tenant's LLM provider rows (table llm_providers).

Rows name environment variables that hold keys, never keys: an argument that is not a variable name is refused
without being echoed, and so is a name outside the api_key_envs allowlist (WABOT_LLM_KEY_* or LLM_KEY_ENVS_ALLOWED,
never INFOBIP_*, WEBHOOK_*, ...: see shared.config.llm); the workers check the same rule again when they read
the row. `set-active` makes exactly one row active in one transaction (or none with `--none`, which
puts tenants.yaml back in charge); running workers pick the change up within their ProviderCache TTL.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Mapping, Sequence

import psycopg
from psycopg.rows import dict_row

from shared.errors import ConfigError
from shared.config.llm import ENV_NAME, PROVIDERS_NEEDING_KEY, default_chat_model, key_env_problem
from shared.config.settings import LLM_PROVIDERS

ROW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ProviderInputError(ValueError):
    """Bad command-line input; the message is safe to print (it never echoes a value that may be a key)."""


def list_rows(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT name, provider, base_url, model_chat, model_embed, api_key_envs, fallback, "
                           "is_active, created_at FROM llm_providers ORDER BY name").fetchall()


def add_row(conn: psycopg.Connection, *, name: str, provider: str, model: str | None = None,
            base_url: str | None = None, api_key_envs: Sequence[str] = (), fallback: str | None = None,
            embed_model: str | None = None, env: Mapping[str, str] | None = None) -> None:
    """Validate and insert one inactive row (commits). Raises ProviderInputError on bad input.

    `env` (default os.environ) supplies LLM_KEY_ENVS_ALLOWED for the api_key_envs allowlist."""
    if not ROW_NAME.match(name or ""):
        raise ProviderInputError("--name must be 1-63 letters, digits, '.', '_' or '-'")
    provider = (provider or "").strip().lower()
    if provider not in LLM_PROVIDERS:
        raise ProviderInputError(f"--provider must be one of {', '.join(LLM_PROVIDERS)}")
    if base_url is not None and not re.match(r"^https?://[^\s/]+", base_url):
        raise ProviderInputError("--base-url must be an http:// or https:// URL")
    envs = list(dict.fromkeys(api_key_envs))
    for i, var in enumerate(envs):
        if not ENV_NAME.match(var):
            raise ProviderInputError(f"--api-key-env #{i + 1} is not an environment variable name (letters, digits, "
                                     "'_'); pass the NAME of the variable that holds the key, never the key")
        try:
            problem = key_env_problem(var, os.environ if env is None else env)
        except ConfigError as exc:  # a malformed LLM_KEY_ENVS_ALLOWED: names the setting, never a value
            raise ProviderInputError(str(exc)) from None
        if problem:
            raise ProviderInputError(f"--api-key-env: {problem}")
    if provider in PROVIDERS_NEEDING_KEY and not envs:
        raise ProviderInputError(f"provider {provider} needs --api-key-env VAR (a variable holding its key)")
    for label, value in (("--model", model), ("--embed-model", embed_model)):
        if value is not None and not value.strip():
            raise ProviderInputError(f"{label} must not be empty")
    with conn.transaction():
        with conn.cursor() as cur:
            if cur.execute("SELECT 1 FROM llm_providers WHERE name = %s", (name,)).fetchone():
                raise ProviderInputError(f"a provider named {name!r} already exists")
            if fallback is not None:
                if fallback == name:
                    raise ProviderInputError("--fallback must name another provider row, not the row itself")
                if not cur.execute("SELECT 1 FROM llm_providers WHERE name = %s", (fallback,)).fetchone():
                    raise ProviderInputError(f"--fallback {fallback!r} is not a provider row of this tenant "
                                             "(add it first)")
            cur.execute("INSERT INTO llm_providers (name, provider, base_url, model_chat, model_embed, api_key_envs,"
                        " fallback) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (name, provider, base_url, model, embed_model, envs, fallback))


def set_active(conn: psycopg.Connection, name: str | None) -> None:
    """Make row `name` the only active one (None: no active row). One transaction: never two active rows."""
    with conn.transaction():
        with conn.cursor() as cur:
            if name is not None and not cur.execute("SELECT 1 FROM llm_providers WHERE name = %s FOR UPDATE",
                                                    (name,)).fetchone():
                raise ProviderInputError(f"no provider named {name!r} (see `wabot providers list`)")
            cur.execute("UPDATE llm_providers SET is_active = false WHERE is_active")
            if name is not None:
                cur.execute("UPDATE llm_providers SET is_active = true WHERE name = %s", (name,))


def unset_envs(envs: Sequence[str], env: Mapping[str, str] = os.environ) -> list[str]:
    """The named variables not set here (a hint: the workers' environment is what counts)."""
    return [v for v in envs if not (env.get(v) or "").strip()]


# ---- command line

def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `providers` and its subcommands on the `wabot` parser."""
    p = sub.add_parser("providers", help="list, add and activate a tenant's LLM providers")
    psub = p.add_subparsers(dest="providers_command", required=True)
    q = psub.add_parser("list", help="the tenant's provider rows; * marks the active one")
    q.add_argument("--tenant", required=True)
    q.set_defaults(fn=cmd_list)
    q = psub.add_parser("add", help="add an (inactive) provider row")
    q.add_argument("--tenant", required=True)
    q.add_argument("--name", required=True)
    q.add_argument("--provider", required=True, help=" | ".join(LLM_PROVIDERS))
    q.add_argument("--model", help="chat model (default: the provider's)")
    q.add_argument("--base-url", help="any OpenAI-compatible server (default: the provider's)")
    q.add_argument("--api-key-env", action="append", default=[], metavar="VAR", nargs="+",
                   help="NAME of an environment variable holding a key; several keys rotate on 401/429")
    q.add_argument("--fallback", metavar="NAME", help="another row that answers when this one fails")
    q.add_argument("--embed-model", help="embedding model (default: the tenant's embedding_model)")
    q.set_defaults(fn=cmd_add)
    q = psub.add_parser("set-active", help="make one row the tenant's provider (--none: back to tenants.yaml)")
    q.add_argument("--tenant", required=True)
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("name", nargs="?")
    g.add_argument("--none", action="store_true")
    q.set_defaults(fn=cmd_set_active)


def _connect(tenant_id: str) -> tuple[Any, psycopg.Connection]:
    from shared.config.settings import load_settings
    from shared.config.tenants import load_tenants

    tenant = load_tenants(load_settings()).require(tenant_id)
    try:
        return tenant, psycopg.connect(tenant.db_dsn, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise ConfigError(f"tenant {tenant_id}: database unreachable ({exc.__class__.__name__}); "
                          f"run `wabot migrate --tenant {tenant_id}` first") from None


def _run(args, action) -> int:
    tenant, conn = _connect(args.tenant)
    try:
        with conn:
            return action(tenant, conn)
    except ProviderInputError as exc:
        print(f"wabot providers: {exc}", file=sys.stderr)
        return 2
    except psycopg.errors.UndefinedTable:
        print(f"wabot providers: tenant {tenant.tenant_id} is not migrated; run `wabot migrate --tenant "
              f"{tenant.tenant_id}`", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"wabot providers: database error ({exc.__class__.__name__})", file=sys.stderr)
        return 1


def cmd_list(args) -> int:
    def action(tenant, conn) -> int:
        rows = list_rows(conn)
        active = next((r for r in rows if r["is_active"]), None)
        print(f"tenant {tenant.tenant_id}: " + (f"active provider row {active['name']!r}" if active else
              f"no active row; tenants.yaml is in effect ({tenant.llm.provider}/{tenant.llm.model_chat})"))
        for r in rows:
            envs = list(r["api_key_envs"] or [])
            missing = unset_envs(envs)
            print(f"{'*' if r['is_active'] else ' '} {r['name']}: {r['provider']}/"
                  f"{r['model_chat'] or default_chat_model(r['provider'])}"
                  + (f" url={r['base_url']}" if r["base_url"] else "")
                  + (f" embed={r['model_embed']}" if r["model_embed"] else "")
                  + (f" keys={','.join(envs)}" if envs else "")
                  + (f" (unset here: {','.join(missing)})" if missing else "")
                  + (f" fallback={r['fallback']}" if r["fallback"] else ""))
        return 0
    return _run(args, action)


def cmd_add(args) -> int:
    envs = [v for group in args.api_key_env for v in group]

    def action(tenant, conn) -> int:
        from shared.config.tenants import EMBEDDING_DIMS

        if args.embed_model and EMBEDDING_DIMS.get(args.embed_model, tenant.embedding_dim) != tenant.embedding_dim:
            raise ProviderInputError(f"--embed-model {args.embed_model} does not make {tenant.embedding_dim}-"
                                     "dimensional vectors like the tenant's embedding_model")
        add_row(conn, name=args.name, provider=args.provider, model=args.model, base_url=args.base_url,
                api_key_envs=envs, fallback=args.fallback, embed_model=args.embed_model)
        print(f"tenant {tenant.tenant_id}: added provider row {args.name!r} (inactive; "
              f"`wabot providers set-active --tenant {tenant.tenant_id} {args.name}` to use it)")
        missing = unset_envs(envs)
        if missing:
            print(f"warning: {', '.join(missing)} not set in this environment; the workers need them",
                  file=sys.stderr)
        return 0
    return _run(args, action)


def cmd_set_active(args) -> int:
    name = None if args.none else args.name

    def action(tenant, conn) -> int:
        set_active(conn, name)
        print(f"tenant {tenant.tenant_id}: " + (f"provider row {name!r} is active" if name else
              "no active provider row; tenants.yaml is in effect") + " (running workers follow within their provider cache TTL, 30 s by default)")
        return 0
    return _run(args, action)
