"""The `wabot` command: dev, chat, migrate, check, sandbox, providers, operators, conversations, users, kb."""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import datetime, timezone

from shared.errors import ConfigError


def cmd_check(args) -> int:
    """Every mistake of the settings and the tenants file in one run, each with its tenant, field and YAML line;
    then (unless --no-probe) each pgvector tenant's embedder embeds one text: its dimension and latency are
    printed, and a failing probe is a mistake at the tenant's embedding_model."""
    from shared.config.settings import load_settings
    from shared.config.tenant_schema import TenantFileError
    from shared.config.tenants import load_tenants_with_lines

    settings = load_settings()
    try:
        tenants, lines = load_tenants_with_lines(settings)
    except TenantFileError as exc:
        return _print_issues(settings.tenants_file, exc.issues)
    issues = [issue for index, t in enumerate(tenants) for issue in _start_up_issues(t, index, lines)]
    if issues:
        return _print_issues(settings.tenants_file, issues)
    if not getattr(args, "no_probe", False):
        issues = _probe_issues(tenants, lines)
        if issues:
            return _print_issues(settings.tenants_file, issues)
    print(f"ok: {len(tenants)} tenant(s)")
    return 0


def _probe_issues(tenants, lines) -> list:
    """Probe every pgvector tenant's embedder (all at once); print what each answered; the failures as issues."""
    from shared.config.tenant_schema import Issue
    from shared.config.yaml_lines import line_of
    from shared.memory.probe import probe_all

    index = {t.tenant_id: i for i, t in enumerate(tenants)}
    issues = []
    for result in probe_all(tenants):
        if result.ok:
            print(f"{result.tenant_id}: {result.describe()}")
            continue
        path = ("tenants", index[result.tenant_id], "embedding_model")
        issues.append(Issue(path, f"tenant {result.tenant_id}: {result.describe()} (wabot check --no-probe "
                                  f"skips this check)", line_of(lines, path)))
    return issues


def _start_up_issues(tenant, index: int, lines) -> list:
    """What a worker checks at start-up (agents, tools, embedder), as issues at the field each concerns."""
    from shared.agents.registry import validate_agents
    from shared.config.tenant_schema import Issue
    from shared.config.yaml_lines import line_of
    from shared.memory.embedders import embedder_for
    from shared.tools.registry import build_registry

    checks = [("enabled_agents", validate_agents), ("http_tools", build_registry)]
    if tenant.vector_store != "sql_fallback":
        checks.append(("embedding_model", embedder_for))
    issues, results = [], {}
    for field, check in checks:
        path = ("tenants", index, field)
        try:
            results[field] = check(tenant)
        except ConfigError as exc:
            issues.append(Issue(path, str(exc), line_of(lines, path)))
    if not issues:
        print(f"{tenant.tenant_id}: tools={','.join(results['http_tools'].names())}")
        print(f"{tenant.tenant_id}: +{tenant.waba_number} llm={tenant.llm.provider}/{tenant.llm.model_chat} "
              f"vector_store={tenant.vector_store} agents={','.join(tenant.enabled_agents)}")
    return issues


def _print_issues(path: str, issues: list) -> int:
    for issue in issues:
        print(f"{path}:{issue.line or '?'}: {issue.message}", file=sys.stderr)
    print(f"configuration error: {len(issues)} mistake(s) in {path}", file=sys.stderr)
    return 2


def cmd_migrate(args) -> int:
    from shared.db.migrate import load_migrations, migrate_tenant
    from shared.config.settings import load_settings
    from shared.config.tenants import load_tenants

    settings = load_settings()
    tenants, migrations = load_tenants(settings), load_migrations(settings.migrations_dir)
    selected = [tenants.require(args.tenant)] if args.tenant else list(tenants)
    failed = 0
    for tenant in selected:
        try:
            applied = migrate_tenant(tenant, migrations)
            print(f"{tenant.tenant_id}: {len(applied)} migration(s) applied" + (f" ({', '.join(applied)})"
                                                                               if applied else ""))
        except Exception as exc:
            failed += 1
            print(f"{tenant.tenant_id}: migration failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
    return 1 if failed else 0


def cmd_dev(args) -> int:
    from devtools.devrun import run_dev

    return run_dev(with_flower=not args.no_flower)


def cmd_sandbox(args) -> int:
    from devtools.sandbox import InfobipSandbox

    box = InfobipSandbox(api_key=args.api_key, port=args.port)
    print(f"Infobip sandbox listening on {box.url}", flush=True)
    try:
        box.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def inbound_payload(sender: str, to: str, text: str, name: str = "Chat User") -> dict:
    """An Infobip inbound webhook body carrying one text message."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    return {"results": [{"from": sender, "to": to, "integrationType": "WHATSAPP", "receivedAt": now,
                         "messageId": f"chat-{uuid.uuid4()}", "message": {"type": "TEXT", "text": text},
                         "contact": {"name": name}, "price": {"pricePerMessage": 0, "currency": "EUR"}}],
            "messageCount": 1, "pendingMessageCount": 0}


def _chat_target(args):
    """(app_url, token, tenant, user, playground) from the arguments and .data/dev.json, or an error line."""
    from devtools.devstack import read_state
    from shared.db.users import is_playground_phone, playground_phone
    from shared.phone import normalize_number

    state = read_state()
    app_url, token = args.url or state.get("app_url"), args.token or state.get("webhook_token")
    if not app_url or not token:
        return "start `make dev` first (it writes .data/dev.json), or pass --url and --token"
    if args.user is None:  # the playground: nothing is sent to WhatsApp (ingress/console/playground.py)
        user = playground_phone(f"cli:{args.name}")
    else:
        try:  # the form the bot stores and answers to
            user = normalize_number(args.user)
        except ValueError:
            return ("--user must be a phone number with its country code, e.g. \"+1 555 000 1111\" "
                    "(5-20 digits; '+', spaces, dashes and brackets are ignored)")
        if not is_playground_phone(user) and not (args.sandbox or state.get("sandbox_url")):
            return "--user with a real number reads replies from the Infobip sandbox: pass --sandbox"
    tenants = state.get("tenants") or []
    tenant = next((t for t in tenants if t["tenant_id"] == args.tenant), None) if args.tenant else (
        tenants[0] if tenants else None)
    if tenant is None:
        return f"unknown tenant {args.tenant!r}"
    return app_url.rstrip("/"), token, tenant, user, is_playground_phone(user)


def _await_playground_turn(http, app_url: str, token: str, tenant_id: str, message_id: str, after: int,
                           timeout: float) -> int:
    """Wait until the turn that takes `message_id` committed (the message left `received`), then print every
    message the bot wrote since, whole (a reply split for WhatsApp is one message here). Returns the last id."""
    deadline, url = time.monotonic() + timeout, f"{app_url}/console/playground/{tenant_id}/turns/{message_id}"
    while time.monotonic() < deadline:
        resp = http.get(url, params={"after": after}, headers={"X-Webhook-Token": token}, timeout=10)
        data = resp.json() if resp.status_code == 200 else {}
        if data.get("done"):
            for reply in data["replies"]:
                print(f"{'bot' if reply['role'] == 'assistant' else 'operator'}> {reply['text']}", flush=True)
                after = max(after, reply["id"])
            if not data["replies"]:
                print(f"[no reply: the message is {data['message']['status']}]", flush=True)
            return after
        time.sleep(0.2)
    print(f"[no reply within {timeout:.0f}s; see the worker logs]", flush=True)
    return after


def _await_sandbox_replies(http, sandbox: str, user: str, since: int, timeout: float, quiet: float = 2.0) -> int:
    """A real number's replies as the fake Infobip got them: every part, until none came for `quiet` seconds."""
    deadline, last_seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline and (last_seen is None or time.monotonic() - last_seen < quiet):
        data = http.get(f"{sandbox}/_sandbox/messages", params={"to": user, "since": since}, timeout=5).json()
        for m in data["messages"]:
            print(f"bot> {m['text']}", flush=True)
            last_seen = time.monotonic()
        since = max(since, data["last_seq"])
        time.sleep(0.2)
    if last_seen is None:
        print(f"[no reply within {timeout:.0f}s; see the worker logs]", flush=True)
    return since


def cmd_chat(args) -> int:
    """Type as a user of the dev bot: each line goes through the real webhook as an Infobip inbound message. By
    default as a playground user (nothing reaches Infobip; replies read from the ingress once the turn committed);
    with --user NUMBER as that WhatsApp user (replies read from the Infobip sandbox)."""
    import requests

    from devtools.devstack import read_state

    target = _chat_target(args)
    if isinstance(target, str):
        print(f"wabot chat: {target}", file=sys.stderr)
        return 2
    app_url, token, tenant, user, playground = target
    sandbox = args.sandbox or read_state().get("sandbox_url")
    print(f"Chatting with tenant {tenant['tenant_id']} (+{tenant['waba_number']}) as +{user}"
          f"{' (playground: nothing is sent to WhatsApp)' if playground else ''}. Ctrl-D to quit.", flush=True)
    http, after = requests.Session(), 0
    since = 0 if playground else http.get(f"{sandbox}/_sandbox/messages", params={"to": user}, timeout=5).json()[
        "last_seq"]
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line:
            continue
        body = inbound_payload(user, tenant["waba_number"], line)
        resp = http.post(f"{app_url}/webhooks/infobip", json=body, headers={"X-Webhook-Token": token}, timeout=10)
        if resp.status_code != 200:
            print(f"[webhook answered {resp.status_code}: {resp.text.strip()}]", flush=True)
        elif playground:
            after = _await_playground_turn(http, app_url, token, tenant["tenant_id"],
                                           body["results"][0]["messageId"], after, args.timeout)
        else:
            since = _await_sandbox_replies(http, sandbox, user, since, args.timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wabot", description="Multi-tenant WhatsApp LLM bot")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="validate settings and tenants.yaml, and probe each tenant's embedder")
    p.add_argument("--no-probe", action="store_true", help="offline: do not call the embedding servers")
    p.set_defaults(fn=cmd_check)
    p = sub.add_parser("migrate", help="apply SQL migrations to tenant databases")
    p.add_argument("--tenant", help="only this tenant")
    p.set_defaults(fn=cmd_migrate)
    p = sub.add_parser("dev", help="run the whole bot locally (what `make dev` runs)")
    p.add_argument("--no-flower", action="store_true")
    p.set_defaults(fn=cmd_dev)
    p = sub.add_parser("sandbox", help="run only the fake Infobip server")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--api-key", default=None)
    p.set_defaults(fn=cmd_sandbox)
    p = sub.add_parser("chat", help="talk to the running dev bot as a WhatsApp user")
    p.add_argument("--tenant")
    p.add_argument("--user", default=None, help="a pretend WhatsApp number (its replies go to the Infobip sandbox); "
                                                "default: your playground user, whose replies go nowhere")
    p.add_argument("--name", default="chat", help="which playground user (each name has its own conversation)")
    p.add_argument("--url"), p.add_argument("--sandbox"), p.add_argument("--token")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(fn=cmd_chat)
    from devtools.cli_providers import add_parser as add_providers_parser

    add_providers_parser(sub)
    from devtools.cli_admin import add_parser as add_admin_parser

    add_admin_parser(sub)
    from devtools.cli_kb import add_parser as add_kb_parser

    add_kb_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
