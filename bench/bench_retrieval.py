"""Retrieval latency of the memory store: pgvector mode vs SQL (full-text) mode, at 10k and 100k rows.

One tenant database holds the rows of 1000 ordinary users, one heavy user (5% of all rows) and 100 tenant-wide
knowledge rows. Each query goes through `MemoryStore.search` (query embedding included), as a turn would.
For comparison, "hnsw-naive" runs the query a naive implementation would write (ORDER BY distance over the whole
table with the user filter applied afterwards, using the HNSW index) and reports how many of the exact top-5 it
returns: why the store filters first and ranks exactly.

Usage:  .venv/bin/python bench/bench_retrieval.py [--sizes 10000,100000] [--queries 200]
Starts an embedded PostgreSQL (devtools.devstack.start_postgres) unless BENCH_DATABASE_URL names a server whose
user may create databases; the benchmark database is dropped at the end.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from pgvector import Vector  # noqa: E402
from pgvector.psycopg import register_vector  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from benchdb import bench_server
from shared.db.migrate import migrate_tenant  # noqa: E402
from shared.memory.embedders import HashEmbedder  # noqa: E402
from shared.memory.store import MemoryStore, embed_text  # noqa: E402
from shared.config.settings import load_settings  # noqa: E402
from shared.config.tenants import parse_tenants  # noqa: E402

DIM = 256
USERS = 1000
HEAVY_SHARE = 0.05
KNOWLEDGE = 100
REAL_WORDS = ("dentist appointment cleaning whitening invoice bill payment friday monday birthday anna mother "
              "school pickup gym yoga class doctor visit insurance car repair bike service flight hotel booking "
              "meeting report deadline project call lunch dinner groceries milk bread pharmacy prescription "
              "vacation passport renewal tax return haircut plumber rent contract").split()


def vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    words = {"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(size)}
    return REAL_WORDS + sorted(words)


def sentence(rng: random.Random, vocab: list[str], lo: int, hi: int) -> str:
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(lo, hi)))


def make_tenant(dsn: str, vector_store: str):
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "WEBHOOK_VERIFY_TOKEN": "bench", "INFOBIP_BASE_URL":
           "http://127.0.0.1:1", "INFOBIP_API_KEY": "bench", "LLM_PROVIDER": "mock"}
    settings = load_settings(env, dotenv=False)
    doc = {"tenant_id": "bench", "waba_number": "+1 555 0100", "db_dsn": dsn, "embedding_model": "local-hash",
           "vector_store": vector_store, "config": {"embedding_dim": DIM}}
    return parse_tenants({"tenants": [doc]}, settings, {}).require("bench")


def load_rows(conn: psycopg.Connection, rng: random.Random, vocab: list[str], user_ids: list[int], heavy: int,
              count: int, knowledge: int) -> float:
    """COPY `count` rows (heavy user's share, tenant knowledge, the rest spread over users); returns seconds."""
    emb = HashEmbedder(DIM)
    n_heavy = int(count * HEAVY_SHARE)
    owners = [None] * knowledge + [heavy] * n_heavy + [rng.choice(user_ids) for _ in range(count - n_heavy - knowledge)]
    t0 = time.perf_counter()
    with conn.cursor().copy("COPY memory_chunks (user_id, kind, title, content, embedding) FROM STDIN "
                            "(FORMAT BINARY)") as copy:
        copy.set_types(["int8", "text", "text", "text", "vector"])
        batch = 2000
        for start in range(0, len(owners), batch):
            rows = []
            for owner in owners[start:start + batch]:
                title, content = sentence(rng, vocab, 1, 3), sentence(rng, vocab, 3, 10)
                rows.append((owner, "knowledge" if owner is None else rng.choice(("memory", "note", "event", "task")),
                             title, content))
            vectors = emb.embed([embed_text(r[2], r[3]) for r in rows])
            for row, vec in zip(rows, vectors):
                copy.write_row((*row, Vector(vec)))
    conn.commit()
    return time.perf_counter() - t0


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def time_queries(conn, store: MemoryStore, who: list[int], queries: list[str]) -> tuple[list[float], float]:
    for uid, q in list(zip(who, queries))[:10]:  # warm caches and the plan
        store.search(conn, uid, q, limit=5)
    times, hits = [], 0
    for uid, q in zip(who, queries):
        t0 = time.perf_counter()
        hits += len(store.search(conn, uid, q, limit=5))
        times.append((time.perf_counter() - t0) * 1000)
    return times, hits / len(queries)


def naive_hnsw(conn, store: MemoryStore, who: list[int], queries: list[str]) -> tuple[list[float], float]:
    """The naive query (HNSW over everyone, filter after): latency and recall of the exact top-5."""
    times, found, wanted = [], 0, 0
    emb = store.embedder
    for uid, q in zip(who, queries):
        exact = {h.id for h in store.search(conn, uid, q, limit=5)}
        t0 = time.perf_counter()
        rows = conn.execute("SELECT id FROM memory_chunks WHERE (user_id = %(u)s OR user_id IS NULL) "
                            "ORDER BY embedding <=> %(q)s LIMIT 5",
                            {"u": uid, "q": Vector(emb.embed([q])[0])}).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
        found += len(exact & {r["id"] for r in rows})
        wanted += len(exact)
    return times, found / max(1, wanted)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="total rows, ascending, comma-separated")
    ap.add_argument("--queries", type=int, default=200, help="queries per ordinary-user measurement")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(7)
    vocab = vocabulary(rng)

    with bench_server() as base:
        dsn = make_conninfo(base, dbname=f"bench_{uuid.uuid4().hex[:8]}")
        run(dsn, sizes, rng, vocab, args)


def run(dsn, sizes, rng, vocab, args) -> None:
    migrate_tenant(make_tenant(dsn, "pgvector"))
    stores = {"pgvector": MemoryStore(make_tenant(dsn, "pgvector"), HashEmbedder(DIM)),
              "sql": MemoryStore(make_tenant(dsn, "sql_fallback"), HashEmbedder(DIM))}
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        register_vector(conn)
        user_ids = [r["id"] for r in conn.execute(
            "INSERT INTO users (phone) SELECT '1555' || g FROM generate_series(1, %s) g RETURNING id",
            (USERS + 1,)).fetchall()]
        heavy, user_ids = user_ids[0], user_ids[1:]
        conn.commit()
        conn.autocommit = True
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        print(f"PostgreSQL {conn.info.server_version // 10000}, pgvector {version['extversion']}, dim {DIM}, {USERS} users + 1 heavy user ({HEAVY_SHARE:.0%} of rows) + {KNOWLEDGE} knowledge rows, "
              f"top-5, {args.queries} queries (heavy user: {args.queries // 4})\n")
        header = f"{'rows':>7}  {'mode':<11} {'who':<13} {'p50 ms':>7} {'p95 ms':>7}  {'hits/q':>6}  note"
        print(header)
        print("-" * len(header))
        loaded = 0
        for size in sizes:
            conn.execute("DROP INDEX IF EXISTS memory_chunks_embedding_hnsw")  # rebuilt below: faster than
            secs = load_rows(conn, rng, vocab, user_ids, heavy, size - loaded,  # maintaining it row by row
                             KNOWLEDGE if loaded == 0 else 0)
            loaded = size
            t0 = time.perf_counter()
            conn.execute("SET maintenance_work_mem = '512MB'")
            conn.execute("CREATE INDEX memory_chunks_embedding_hnsw ON memory_chunks "
                         "USING hnsw (embedding vector_cosine_ops)")
            index_secs = time.perf_counter() - t0
            conn.execute("VACUUM ANALYZE memory_chunks")
            per_user = conn.execute("SELECT count(*) AS n FROM memory_chunks WHERE user_id = %s",
                                    (user_ids[0],)).fetchone()["n"]
            print(f"{size:>7}  loaded by COPY in {secs:.1f}s, HNSW index built in {index_secs:.1f}s; "
                  f"typical user ~{per_user} rows, heavy user {int(size * HEAVY_SHARE)}")
            typical = [rng.choice(user_ids) for _ in range(args.queries)]
            heavy_who = [heavy] * (args.queries // 4)
            queries = [sentence(rng, vocab, 1, 4) for _ in range(args.queries)]
            for mode, store in stores.items():
                assert store.mode(conn) == mode
                for who_name, who in (("typical user", typical), ("heavy user", heavy_who)):
                    times, hits = time_queries(conn, store, who, queries[:len(who)])
                    print(f"{size:>7}  {mode:<11} {who_name:<13} {statistics.median(times):>7.2f} "
                          f"{pct(times, 95):>7.2f}  {hits:>6.2f}  exact, filtered first")
            for who_name, who in (("typical user", typical), ("heavy user", heavy_who)):
                times, recall = naive_hnsw(conn, stores["pgvector"], who, queries[:len(who)])
                print(f"{size:>7}  {'hnsw-naive':<11} {who_name:<13} {statistics.median(times):>7.2f} "
                      f"{pct(times, 95):>7.2f}  {'':>6}  recall of exact top-5: {recall:.0%}")


if __name__ == "__main__":
    main()
