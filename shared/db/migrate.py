"""Ordered SQL migrations from `migrations/`, applied to one tenant database at a time.

Guarantees: each file runs in its own transaction together with its `schema_migrations` row (all or nothing);
a session-level advisory lock serialises processes that start together (web, workers and beat all migrate at
start-up), so every file is applied exactly once per database.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.config.settings import DEFAULT_MIGRATIONS_DIR
from shared.config.tenants import Tenant

log = logging.getLogger(__name__)

_LOCK_KEY = 0x7761626F74  # "wabot": the advisory lock every migrating process takes


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = DEFAULT_MIGRATIONS_DIR) -> list[Migration]:
    """The migrations of `directory`, in order (processes pass settings.migrations_dir: WABOT_MIGRATIONS_DIR)."""
    files = sorted(p for p in directory.glob("*.sql"))
    return [Migration(p.stem, p.read_text(encoding="utf-8")) for p in files]


def render(migration: Migration, tenant: Tenant) -> str:
    """Fill the per-tenant template values (the embedding size is fixed per tenant database)."""
    return migration.sql.replace("{{embedding_dim}}", str(int(tenant.embedding_dim)))


def ensure_database(dsn: str) -> bool:
    """Create the database named in `dsn` when it does not exist yet. Returns True if it was created."""
    try:
        psycopg.connect(dsn, connect_timeout=10).close()
        return False
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    dbname = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True, connect_timeout=10) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            return False  # another process created it at the same moment
    log.info("created database", extra={"database": dbname})
    return True


def migrate_tenant(tenant: Tenant, migrations: list[Migration] | None = None, create_db: bool = True) -> list[str]:
    """Apply the pending migrations to the tenant's database; returns the versions applied now."""
    migrations = load_migrations() if migrations is None else migrations
    if create_db:
        ensure_database(tenant.db_dsn)
    applied_now: list[str] = []
    with psycopg.connect(tenant.db_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0]: r[1] for r in conn.execute("SELECT version, checksum FROM schema_migrations")}
            for m in migrations:
                if m.version in done:
                    if done[m.version] != m.checksum:
                        log.warning("migration changed after it was applied",
                                    extra={"tenant_id": tenant.tenant_id, "version": m.version})
                    continue
                with conn.transaction():
                    conn.execute(render(m, tenant))
                    conn.execute("INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                                 (m.version, m.checksum))
                applied_now.append(m.version)
                log.info("applied migration", extra={"tenant_id": tenant.tenant_id, "version": m.version})
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def has_vector(conn: psycopg.Connection) -> bool:
    """Whether this tenant database has the pgvector column (the migration adds it only where it can)."""
    row = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = 'memory_chunks' AND column_name = 'embedding'"
    ).fetchone()
    return row is not None
