"""Row factories for the tests: one row (or many) in a tenant database, with sensible defaults.

Each factory takes an open psycopg connection (autocommit or inside a transaction, any row factory), keyword
overrides for the columns, inserts, and returns what was inserted as a dict (`RETURNING *`):

    uid = factories.user(conn)["id"]                      # a new phone, named Ada, who wrote 5 minutes ago
    factories.reminder(conn, uid, text="stretch")          # due a minute ago
    factories.messages(conn, uid, n=500, role=lambda i: "user" if i % 2 == 0 else "assistant")

Defaults never depend on today's date: times are "now" or relative to it.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from helpers import new_user

_DEFAULT: Any = object()  # "the factory's default", where None is a value a test may ask for (NULL)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _insert(conn, table: str, row: dict) -> dict:
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING *").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, list(row.values())).fetchone()


def _insert_many(conn, table: str, rows: list[dict]) -> list[dict]:
    if not rows:
        return []
    columns = list(rows[0])
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING *").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    with conn.cursor(row_factory=dict_row) as cur:
        cur.executemany(query, [[r[c] for c in columns] for r in rows], returning=True)
        out = []
        while True:
            out.extend(cur.fetchall())
            if not cur.nextset():
                return out


def _each(value: Any, i: int) -> Any:
    """`value`, or `value(i)` for the i-th row when it is a function of the row's index."""
    return value(i) if callable(value) else value


def user(conn, *, phone: str | None = None, name: str | None = "Ada", last_inbound_at: datetime | None = _DEFAULT,
         **columns) -> dict:
    """A user with a phone no other test uses (helpers.new_user), who wrote 5 minutes ago (window open)."""
    if last_inbound_at is _DEFAULT:
        last_inbound_at = _now() - timedelta(minutes=5)
    return _insert(conn, "users", {"phone": phone or new_user(), "name": name, "last_inbound_at": last_inbound_at,
                                   **columns})


def message(conn, user_id: int, *, role: str = "user", body: str | None = "hello", status: str = "answered",
            **columns) -> dict:
    """One message of `user_id`'s conversation (an answered inbound text unless told otherwise)."""
    return _insert(conn, "messages", {"user_id": user_id, "role": role, "body": body, "status": status,
                                      **_jsonb(columns, "payload")})


def messages(conn, user_id: int, n: int, *, role: str | Callable[[int], str] = "user",
             body: str | Callable[[int], str] = lambda i: f"message {i}",
             status: str | Callable[[int], str] = "answered", **columns) -> list[dict]:
    """`n` messages in one executemany, in id order; any value may be a function of the message's index."""
    rows = [{"user_id": user_id, "role": _each(role, i), "body": _each(body, i), "status": _each(status, i),
             **_jsonb({k: _each(v, i) for k, v in columns.items()}, "payload")} for i in range(n)]
    return _insert_many(conn, "messages", rows)


def memory_item(conn, user_id: int | None, *, title: str = "a note", content: str | None = None, kind: str = "note",
                starts_at: datetime | None = None, **columns) -> dict:
    """An item the bot keeps for `user_id` (None: knowledge of the tenant); content defaults to the title."""
    return _insert(conn, "memory_chunks", {"user_id": user_id, "kind": kind, "title": title,
                                           "content": title if content is None else content, "starts_at": starts_at,
                                           **_jsonb(columns, "metadata")})


def reminder(conn, user_id: int, *, text: str = "take the pills", due_at: datetime | None = None, **columns) -> dict:
    """A pending reminder of `user_id`, due now unless told otherwise."""
    return _insert(conn, "reminders", {"user_id": user_id, "text": text, "due_at": due_at or _now(), **columns})


def reminders(conn, user_id: int, n: int, *, text: str | Callable[[int], str] = lambda i: f"reminder {i}",
              due_at: datetime | Callable[[int], datetime] | None = None, **columns) -> list[dict]:
    """`n` pending reminders in one executemany; any value may be a function of the reminder's index."""
    rows = [{"user_id": user_id, "text": _each(text, i), "due_at": _each(due_at, i) or _now(),
             **{k: _each(v, i) for k, v in columns.items()}} for i in range(n)]
    return _insert_many(conn, "reminders", rows)


def usage(conn, *, provider: str = "mock", model: str = "mock-chat", prompt_tokens: int = 0,
          completion_tokens: int = 0, total_tokens: int | None = None, **columns) -> dict:
    """One LLM call's usage (now); total_tokens defaults to prompt + completion."""
    total = prompt_tokens + completion_tokens if total_tokens is None else total_tokens
    return _insert(conn, "llm_usage", {"provider": provider, "model": model, "prompt_tokens": prompt_tokens,
                                       "completion_tokens": completion_tokens, "total_tokens": total, **columns})


def llm_provider(conn, *, name: str = "test-provider", provider: str = "openai", base_url: str | None = None,
                 api_key_envs: list[str] = (), is_active: bool = True, **columns) -> dict:
    """An LLM provider row (active unless told otherwise), as an operator with database access writes it."""
    return _insert(conn, "llm_providers", {"name": name, "provider": provider, "base_url": base_url,
                                           "api_key_envs": list(api_key_envs), "is_active": is_active, **columns})


def _jsonb(columns: dict, *names: str) -> dict:
    return {k: Jsonb(v) if k in names and v is not None and not isinstance(v, Jsonb) else v
            for k, v in columns.items()}
