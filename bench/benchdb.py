"""The PostgreSQL of a benchmark: BENCH_DATABASE_URL's server, or an embedded one (pgserver) for this run.

`with bench_server() as base:` yields the server's URL; databases whose names start with `bench_` created on it
during the run are dropped at the end, and an embedded server is stopped and removed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg
from psycopg.conninfo import make_conninfo


@contextmanager
def bench_server() -> Iterator[str]:
    server, tmp = None, None
    base = os.environ.get("BENCH_DATABASE_URL")
    if not base:
        from devtools.devstack import start_postgres

        tmp = tempfile.mkdtemp(prefix="wabot-bench-")
        server = start_postgres(Path(tmp) / "pg")
        base = server.url
    admin_dsn = make_conninfo(base, dbname="postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        before = {r[0] for r in admin.execute("SELECT datname FROM pg_database")}
    try:
        yield base
    finally:
        try:
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                for (name,) in admin.execute("SELECT datname FROM pg_database").fetchall():
                    if name.startswith("bench_") and name not in before:
                        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            if server:
                server.stop()
                shutil.rmtree(tmp, ignore_errors=True)
