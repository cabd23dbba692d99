"""SQL of `operators`: who may call a tenant's admin API. Only token hashes are stored (the token is shown once,
when it is made); functions take an open connection so the caller decides the transaction boundaries."""
from __future__ import annotations

import psycopg


def create(conn: psycopg.Connection, name: str, token_hash: str) -> dict:
    """A new active operator; raises psycopg.errors.UniqueViolation when an active operator has this name."""
    return conn.execute(
        "INSERT INTO operators (name, token_hash) VALUES (%s, %s) RETURNING id, name, created_at, revoked_at",
        (name, token_hash)).fetchone()


def active_by_token_hash(conn: psycopg.Connection, token_hash: str) -> dict | None:
    """The active (not revoked) operator whose token hashes to `token_hash`, or None."""
    return conn.execute("SELECT id, name FROM operators WHERE token_hash = %s AND revoked_at IS NULL",
                        (token_hash,)).fetchone()


def list_all(conn: psycopg.Connection) -> list[dict]:
    return conn.execute("SELECT id, name, created_at, revoked_at FROM operators ORDER BY id").fetchall()


def revoke(conn: psycopg.Connection, name: str) -> int:
    """Revoke the active operator named `name`; returns how many were revoked (0 or 1)."""
    return conn.execute("UPDATE operators SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL",
                        (name,)).rowcount


def set_password(conn: psycopg.Connection, name: str, password_hash: str) -> int:
    """Give the active operator `name` a console password (its hash); returns how many were changed (0 or 1)."""
    return conn.execute("UPDATE operators SET password_hash = %s WHERE name = %s AND revoked_at IS NULL",
                        (password_hash, name)).rowcount


def active_by_name(conn: psycopg.Connection, name: str) -> dict | None:
    """The active operator `name` with its password hash (None: no password, API token only)."""
    return conn.execute("SELECT id, name, password_hash FROM operators WHERE name = %s AND revoked_at IS NULL",
                        (name,)).fetchone()


def active_by_id(conn: psycopg.Connection, operator_id: int) -> dict | None:
    """The active operator `operator_id` (a console session ends when its operator is revoked)."""
    return conn.execute("SELECT id, name FROM operators WHERE id = %s AND revoked_at IS NULL",
                        (operator_id,)).fetchone()
