"""Migrations: applied once per database, recorded, safe when many processes start together."""
import multiprocessing
import os

import psycopg
import pytest

from shared.db.migrate import has_vector, load_migrations, migrate_tenant
from shared.config.tenants import parse_tenants

from conftest import fresh_dsn


def make_tenant(settings, dsn, **over):
    doc = {"tenant_id": "m", "waba_number": "+1 555 0100", "db_dsn": dsn, "embedding_model": "local-hash"}
    doc.update(over)
    return parse_tenants({"tenants": [doc]}, settings, {}).require("m")


def test_fresh_database_is_created_and_migrated_once(settings, pg_url):
    tenant = make_tenant(settings, fresh_dsn(pg_url))
    applied = migrate_tenant(tenant)
    assert applied == [m.version for m in load_migrations()]
    assert migrate_tenant(tenant) == []
    with psycopg.connect(tenant.db_dsn) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        assert {"users", "messages", "memory_chunks", "llm_providers", "agents", "reminders", "llm_usage",
                "outbound_messages", "schema_migrations"} <= tables
        assert has_vector(conn)  # the embedded server has pgvector
        dim = conn.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = 'memory_chunks'::regclass "
                           "AND attname = 'embedding'").fetchone()[0]
        assert dim == tenant.embedding_dim
        index = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'memory_chunks_embedding_hnsw'"
                             ).fetchone()
        assert index and "hnsw" in index[0]


def _migrate_in_child(args):
    settings, dsn = args
    return migrate_tenant(make_tenant(settings, dsn))


def test_processes_starting_together_apply_each_migration_once(settings, pg_url):
    dsn = fresh_dsn(pg_url)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.map(_migrate_in_child, [(settings, dsn)] * 4)
    applied = [v for r in results for v in r]
    assert sorted(applied) == sorted(m.version for m in load_migrations())  # each exactly once, no errors
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(load_migrations())


def test_a_failing_migration_rolls_back_and_is_not_recorded(settings, pg_url, tmp_path):
    from shared.db.migrate import Migration

    tenant = make_tenant(settings, fresh_dsn(pg_url))
    good = load_migrations()
    broken = Migration("9999_broken", "CREATE TABLE half_done (id int); SELECT no_such_function();")
    with pytest.raises(psycopg.Error):
        migrate_tenant(tenant, good + [broken])
    with psycopg.connect(tenant.db_dsn) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone()[0] is None
        versions = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    assert "9999_broken" not in versions and {m.version for m in good} <= versions


SYSTEM_PG = os.environ.get("TEST_FALLBACK_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _system_pg_reachable() -> bool:
    try:
        with psycopg.connect(SYSTEM_PG, connect_timeout=2) as conn:
            return conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone() is None
    except Exception:
        return False


@pytest.mark.skipif(not _system_pg_reachable(), reason="no PostgreSQL without pgvector on 127.0.0.1:5432")
def test_migrations_succeed_on_postgres_without_pgvector(settings):
    tenant = make_tenant(settings, fresh_dsn(SYSTEM_PG, "nofallback"))
    try:
        assert migrate_tenant(tenant) == [m.version for m in load_migrations()]
        with psycopg.connect(tenant.db_dsn) as conn:
            assert not has_vector(conn)
            conn.execute("INSERT INTO users (phone) VALUES ('1555')")
            uid = conn.execute("SELECT id FROM users").fetchone()[0]
            conn.execute("INSERT INTO memory_chunks (user_id, content) VALUES (%s, 'dentist tomorrow')", (uid,))
            hit = conn.execute("SELECT content FROM memory_chunks WHERE tsv @@ plainto_tsquery('simple', 'dentist')"
                               ).fetchone()
            assert hit[0] == "dentist tomorrow"
    finally:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        name = conninfo_to_dict(tenant.db_dsn)["dbname"]
        with psycopg.connect(make_conninfo(SYSTEM_PG), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
