"""`wabot operators|conversations|users`: the admin API's operations from the command line, on one tenant.

- `operators add|list|revoke|password`: who may call /api/v1/tenants/<tenant>/...; a new token is printed ONCE
  (only its SHA-256 is stored); `--password` / `password` set the operator's console sign-in (a scrypt hash);
- `conversations list|show|takeover|handback`;
- `users export|forget --phone P`: everything stored about a user as JSON; its erasure (audited as `cli:<user>`).
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys

from devtools.cli_common import connection, fail, load_tenant
from shared.errors import ConfigError


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _user_id(conn, phone: str) -> int | None:
    from shared.db import user_data
    from shared.phone import normalize_number

    try:
        return user_data.user_id_by_phone(conn, normalize_number(phone))
    except ValueError:
        raise ConfigError("--phone is not a phone number (5-20 digits with its country code)") from None


# ------------------------------------------------------------ operators

def cmd_operators_add(args) -> int:
    import psycopg

    from ingress.admin_api.tokens import hash_token, new_token
    from shared.db import operators

    _settings, tenant = load_tenant(args.tenant)
    token = new_token()
    try:
        with connection(tenant) as conn:
            row = operators.create(conn, args.name, hash_token(token))
    except psycopg.errors.UniqueViolation:
        return fail(f"an active operator named {args.name!r} exists; revoke it first", 2)
    print(f"operator {row['name']} (id {row['id']}) added to tenant {tenant.tenant_id}.")
    print("Token (shown once, store it now; only its hash is kept):")
    print(token)
    if args.password:
        return cmd_operators_password(args)
    return 0


def _read_password() -> str:
    """From the terminal (asked twice, not echoed), or the first line of standard input when it is not one."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Console password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit(fail("the two passwords differ; nothing changed", 2))
    return first


def cmd_operators_password(args) -> int:
    from shared.db import operators
    from shared.passwords import WeakPassword, hash_password

    _settings, tenant = load_tenant(args.tenant)
    try:
        hashed = hash_password(_read_password())
    except WeakPassword as exc:
        return fail(f"{exc}; nothing changed", 2)
    with connection(tenant) as conn:
        changed = operators.set_password(conn, args.name, hashed)
    if not changed:
        return fail(f"no active operator named {args.name!r} in tenant {tenant.tenant_id}")
    print(f"operator {args.name} may sign in to the console: /console/login, business {tenant.tenant_id}")
    return 0


def cmd_operators_list(args) -> int:
    from shared.db import operators

    _settings, tenant = load_tenant(args.tenant)
    with connection(tenant) as conn:
        rows = operators.list_all(conn)
    for r in rows:
        status = f"revoked {r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "active"
        print(f"{r['id']:>4}  {r['name']:<24} {status:<24} created {r['created_at']:%Y-%m-%d %H:%M}")
    if not rows:
        print(f"tenant {tenant.tenant_id}: no operators (wabot operators add --tenant {tenant.tenant_id} --name N)")
    return 0


def cmd_operators_revoke(args) -> int:
    from shared.db import operators

    _settings, tenant = load_tenant(args.tenant)
    with connection(tenant) as conn:
        revoked = operators.revoke(conn, args.name)
    if not revoked:
        return fail(f"no active operator named {args.name!r} in tenant {tenant.tenant_id}")
    print(f"operator {args.name} revoked: its token no longer works")
    return 0


# ------------------------------------------------------------ conversations

def cmd_conversations_list(args) -> int:
    from shared.db import user_data

    _settings, tenant = load_tenant(args.tenant)
    digits = "".join(c for c in args.search if c.isdigit()) if args.search else None
    with connection(tenant) as conn:
        rows = user_data.list_conversations(conn, state=args.state, search=args.search, digits=digits or None,
                                            limit=args.limit, offset=0)
    for r in rows:
        last = (r["last_message_body"] or "").replace("\n", " ")[:60]
        print(f"{r['user_id']:>6}  +{r['phone']:<16} {r['state']:<10} {(r['name'] or '-')[:20]:<20} {last}")
    return 0


def cmd_conversations_show(args) -> int:
    from shared.db import user_data

    _settings, tenant = load_tenant(args.tenant)
    with connection(tenant) as conn:
        user_id = _user_id(conn, args.phone)
        if user_id is None:
            return fail("no such user in this tenant")
        head = user_data.conversation(conn, user_id)
        rows = user_data.messages_with_delivery(conn, user_id, before_id=None, limit=args.limit)
    print(f"user {user_id} +{head['phone']} ({head['name'] or '-'}) state={head['state']}")
    for m in reversed(rows):
        delivery = ",".join(d["status"] for d in m["delivery"])
        print(f"[{m['created_at']:%Y-%m-%d %H:%M}] {m['role']:<9} {m['body'] or '(' + m['message_type'] + ')'}"
              + (f"   <{delivery}>" if delivery else ""))
    return 0


def _switch(args, which: str) -> int:
    from shared.db import user_data
    from shared.db.pools import TenantPools
    from shared.db.unit_of_work import UnitOfWork
    from shared.handoff.state import conversation_state, hand_back, take_over
    from shared.queueing.tasks import enqueue, make_celery

    settings, tenant = load_tenant(args.tenant)
    celery, pools = make_celery(settings), TenantPools(max_size=1)
    uow = UnitOfWork(pools, lambda pub: enqueue(celery, pub.task, pub.payload, pub.countdown))
    try:
        with uow.transaction(tenant) as tx:
            user_id = _user_id(tx.conn, args.phone)
            if user_id is None:
                return fail("no such user in this tenant")
            switch = take_over if which == "takeover" else hand_back
            changed = switch(tx, user_id, by=_actor(), reason=args.reason)
            state = conversation_state(tx.conn, user_id)
        uow.flush()
    finally:
        pools.close()
    print(f"user {user_id}: state {state}" + ("" if changed else " (unchanged)"))
    return 0


def cmd_conversations_takeover(args) -> int:
    return _switch(args, "takeover")


def cmd_conversations_handback(args) -> int:
    return _switch(args, "handback")


# ------------------------------------------------------------ users

def cmd_users_export(args) -> int:
    from shared.privacy.requests import export_user

    _settings, tenant = load_tenant(args.tenant)
    with connection(tenant) as conn:
        user_id = _user_id(conn, args.phone)
        data = export_user(conn, user_id, actor=_actor()) if user_id is not None else None
    if data is None:
        return fail("no such user in this tenant")
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        print(f"user {user_id}: exported to {args.out}")
    else:
        print(text)
    return 0


def cmd_users_forget(args) -> int:
    from shared.clock import utcnow
    from shared.privacy.requests import forget_user

    _settings, tenant = load_tenant(args.tenant)
    if not args.yes:
        return fail("this erases the user's data for good; add --yes to confirm", 2)
    with connection(tenant) as conn:
        user_id = _user_id(conn, args.phone)
        deleted = forget_user(conn, user_id, actor=_actor(), now=utcnow()) if user_id is not None else None
    if deleted is None:
        return fail("no such user in this tenant")
    print(f"user {user_id} erased: " + ", ".join(f"{k}={v}" for k, v in deleted.items()))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `operators`, `conversations` and `users` on the `wabot` parser."""
    def command(group, name: str, fn, help_text: str, *, phone: bool = False):
        q = group.add_parser(name, help=help_text)
        q.add_argument("--tenant", required=True)
        if phone:
            q.add_argument("--phone", required=True, help="the user's WhatsApp number")
        q.set_defaults(fn=fn)
        return q

    ops = sub.add_parser("operators", help="admin API operators of a tenant").add_subparsers(
        dest="operators_command", required=True)
    add = command(ops, "add", cmd_operators_add, "add an operator; prints its token once")
    add.add_argument("--name", required=True)
    add.add_argument("--password", action="store_true",
                     help="also set a console password (asked, or read from standard input)")
    command(ops, "password", cmd_operators_password,
            "set an operator's console password (asked, or read from standard input)").add_argument(
        "--name", required=True)
    command(ops, "list", cmd_operators_list, "the tenant's operators")
    command(ops, "revoke", cmd_operators_revoke, "revoke an operator's token").add_argument("--name", required=True)
    conv = sub.add_parser("conversations", help="a tenant's conversations").add_subparsers(
        dest="conversations_command", required=True)
    q = command(conv, "list", cmd_conversations_list, "conversations, most recent first")
    q.add_argument("--state", choices=("bot", "human", "opted_out"))
    q.add_argument("--search", help="part of the phone, the name or any message text")
    q.add_argument("--limit", type=int, default=50)
    command(conv, "show", cmd_conversations_show, "a conversation's messages", phone=True).add_argument(
        "--limit", type=int, default=50)
    for name, fn in (("takeover", cmd_conversations_takeover), ("handback", cmd_conversations_handback)):
        command(conv, name, fn, f"{name} the conversation", phone=True).add_argument("--reason", default="")
    users = sub.add_parser("users", help="a user's data: export, erase").add_subparsers(
        dest="users_command", required=True)
    command(users, "export", cmd_users_export, "everything stored about a user, as JSON", phone=True).add_argument(
        "--out", help="write to this file instead of stdout")
    command(users, "forget", cmd_users_forget, "erase a user (usage counts stay)", phone=True).add_argument(
        "--yes", action="store_true", help="confirm the erasure")
