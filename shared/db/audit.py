"""SQL of `audit_log` and its salt: what was done to whom, where "whom" is a salted hash, never a phone."""
from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb


def salt(conn: psycopg.Connection, candidate: str) -> str:
    """The tenant database's salt: `candidate` (a fresh random value) when none was stored yet, else the stored
    one. Two callers racing both get the one that was stored first."""
    conn.execute("INSERT INTO audit_salt (salt) VALUES (%s) ON CONFLICT (one) DO NOTHING", (candidate,))
    return conn.execute("SELECT salt FROM audit_salt").fetchone()["salt"]


def record(conn: psycopg.Connection, *, actor: str, action: str, subject_hash: str | None, detail: dict) -> int:
    return conn.execute(
        "INSERT INTO audit_log (actor, action, subject_hash, detail) VALUES (%s, %s, %s, %s) RETURNING id",
        (actor, action, subject_hash, Jsonb(detail))).fetchone()["id"]


def recent(conn: psycopg.Connection, limit: int = 100) -> list[dict]:
    return conn.execute("SELECT id, actor, action, subject_hash, detail, created_at FROM audit_log "
                        "ORDER BY id DESC LIMIT %s", (limit,)).fetchall()
