"""SQL of knowledge jobs, the recorded embedding model and the reindex staging vectors (migration 0013).

Functions take an open connection and never commit: the caller decides the transaction. Vectors travel as
pgvector's text form (shared.db.knowledge.vector_literal).
"""
from __future__ import annotations

from typing import Sequence

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

JOB_COLUMNS = ("id, kind, source, filename, content_type, url, tags, allow_private, embedding_model, embedding_dim, "
               "status, result, document_id, chunks_done, chunks_total, error, attempts, lease_until, created_at, "
               "started_at, finished_at, updated_at, octet_length(content) AS content_bytes")
HNSW_MAX_DIM = 2000  # pgvector's HNSW limit, as in migrations 0002 and 0011
SWAP_LOCK_TIMEOUT_MS = 3000


# ---------------------------------------------------------------- jobs

def create_job(conn: psycopg.Connection, *, kind: str, source: str | None = None, filename: str | None = None,
               content_type: str | None = None, url: str | None = None, content: bytes | None = None,
               tags: Sequence[str] | None = None, allow_private: bool = False, embedding_model: str | None = None,
               embedding_dim: int | None = None) -> dict:
    """Insert a queued job; returns its row (without the content)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"""
            INSERT INTO knowledge_jobs (kind, source, filename, content_type, url, content, tags, allow_private,
                                        embedding_model, embedding_dim)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {JOB_COLUMNS}
        """, (kind, source, filename, content_type, url, content, None if tags is None else list(tags),
              allow_private, embedding_model, embedding_dim)).fetchone()


def job(conn: psycopg.Connection, job_id: int) -> dict | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {JOB_COLUMNS} FROM knowledge_jobs WHERE id = %s", (job_id,)).fetchone()


def job_content(conn: psycopg.Connection, job_id: int) -> bytes | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT content FROM knowledge_jobs WHERE id = %s", (job_id,)).fetchone()
    return None if row is None or row["content"] is None else bytes(row["content"])


def list_jobs(conn: psycopg.Connection, limit: int, source: str | None = None) -> list[dict]:
    """The newest jobs first (of one source when given)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {JOB_COLUMNS} FROM knowledge_jobs WHERE %(source)s::text IS NULL "
                           "OR source = %(source)s ORDER BY id DESC LIMIT %(limit)s",
                           {"source": source, "limit": limit}).fetchall()


def active_reindex(conn: psycopg.Connection) -> dict | None:
    """The queued or running reindex job, if any (at most one runs per tenant)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {JOB_COLUMNS} FROM knowledge_jobs WHERE kind = 'reindex' "
                           "AND status IN ('queued', 'running') ORDER BY id LIMIT 1").fetchone()


def claim_job(conn: psycopg.Connection, job_id: int, lease_seconds: float) -> dict | None:
    """Take the job for one attempt: queued, or running with an expired lease (its worker died). None when it is
    finished or another attempt holds a live lease."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"""
            UPDATE knowledge_jobs SET status = 'running', attempts = attempts + 1, chunks_done = 0,
                lease_until = now() + make_interval(secs => %(lease)s), started_at = coalesce(started_at, now()),
                updated_at = now()
            WHERE id = %(id)s AND (status = 'queued' OR (status = 'running' AND lease_until < now()))
            RETURNING {JOB_COLUMNS}
        """, {"id": job_id, "lease": lease_seconds}).fetchone()


def progress(conn: psycopg.Connection, job_id: int, done: int, total: int | None, lease_seconds: float) -> None:
    """Record progress and renew the lease of the running attempt."""
    conn.execute("UPDATE knowledge_jobs SET chunks_done = %s, chunks_total = coalesce(%s, chunks_total), "
                 "lease_until = now() + make_interval(secs => %s), updated_at = now() "
                 "WHERE id = %s AND status = 'running'", (done, total, lease_seconds, job_id))


def release_job(conn: psycopg.Connection, job_id: int, error: str) -> None:
    """Back to queued (a retry claims it again), with the reason it waits."""
    conn.execute("UPDATE knowledge_jobs SET status = 'queued', error = %s, lease_until = NULL, updated_at = now() "
                 "WHERE id = %s AND status = 'running'", (error, job_id))


def finish_job(conn: psycopg.Connection, job_id: int, *, status: str, result: str | None, error: str | None,
               document_id: int | None = None, chunks: int | None = None) -> None:
    """done or failed; the uploaded content is dropped (the document, or its last good version, is kept)."""
    conn.execute("""
        UPDATE knowledge_jobs SET status = %s, result = %s, error = %s, document_id = coalesce(%s, document_id),
            chunks_done = coalesce(%s, chunks_done), chunks_total = coalesce(chunks_total, %s), content = NULL,
            lease_until = NULL, finished_at = now(), updated_at = now()
        WHERE id = %s
    """, (status, result, error, document_id, chunks, chunks, job_id))


# ---------------------------------------------------------------- the recorded embedding model

def embedding_model(conn: psycopg.Connection) -> tuple[str, int] | None:
    """(model, dim) the `knowledge_chunks.embedding` column holds; None when never recorded."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT model, dim FROM knowledge_embedding_model").fetchone()
    return (row["model"], row["dim"]) if row else None


def record_embedding_model(conn: psycopg.Connection, model: str, dim: int, *, replace: bool) -> None:
    """Record the column's model: once (first semantic ingest), or replacing it (a reindex's swap)."""
    conflict = "DO UPDATE SET model = EXCLUDED.model, dim = EXCLUDED.dim, updated_at = now()" if replace \
        else "DO NOTHING"
    conn.execute(f"INSERT INTO knowledge_embedding_model (model, dim) VALUES (%s, %s) "
                 f"ON CONFLICT (singleton) {conflict}", (model, dim))


# ---------------------------------------------------------------- reindex staging and swap

def chunks_to_reembed(conn: psycopg.Connection, job_id: int, limit: int) -> list[dict]:
    """Chunks (with their document's title) that have no staged vector of this job yet, in id order."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("""
            SELECT c.id, c.heading_path, c.text, d.title FROM knowledge_chunks c
            JOIN knowledge_documents d ON d.id = c.document_id
            WHERE NOT EXISTS (SELECT 1 FROM knowledge_reindex_vectors s WHERE s.job_id = %s AND s.chunk_id = c.id)
            ORDER BY c.id LIMIT %s
        """, (job_id, limit)).fetchall()


def _count(conn: psycopg.Connection, query: str, params: tuple = ()) -> int:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchone()["n"]


def count_chunks(conn: psycopg.Connection) -> int:
    return _count(conn, "SELECT count(*) AS n FROM knowledge_chunks")


def count_staged(conn: psycopg.Connection, job_id: int) -> int:
    return _count(conn, "SELECT count(*) AS n FROM knowledge_reindex_vectors WHERE job_id = %s", (job_id,))


def stage_vectors(conn: psycopg.Connection, job_id: int, vectors: Sequence[tuple[int, str]]) -> None:
    """Stage (chunk id, vector literal) pairs; a pair already staged (a redelivered batch) is kept as it is."""
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO knowledge_reindex_vectors (job_id, chunk_id, embedding) "
                        "SELECT %s, id, %s::vector FROM knowledge_chunks WHERE id = %s "
                        "ON CONFLICT (job_id, chunk_id) DO NOTHING",
                        [(job_id, literal, chunk_id) for chunk_id, literal in vectors])


def lock_chunks_for_swap(conn: psycopg.Connection) -> None:
    """The swap's lock: waits for running ingests and searches, and holds new ones until it commits, so none
    reads the recorded model before the swap and the vectors after it. Waits at most SWAP_LOCK_TIMEOUT_MS
    (psycopg.errors.LockNotAvailable; the caller tries again), so a long transaction does not queue every search
    behind the waiting swap."""
    conn.execute(f"SET LOCAL lock_timeout = '{int(SWAP_LOCK_TIMEOUT_MS)}ms'")  # never queue searches for long
    conn.execute("LOCK TABLE knowledge_chunks IN ACCESS EXCLUSIVE MODE")


def lock_chunks_for_write(conn: psycopg.Connection) -> None:
    """An ingest's lock (what its INSERT takes anyway), taken before it reads the recorded model: a reindex swap
    cannot commit between that read and its write."""
    if not conn.autocommit:  # autocommit: every statement is its own transaction, nothing to hold
        conn.execute("LOCK TABLE knowledge_chunks IN ROW EXCLUSIVE MODE")


def lock_chunks_for_read(conn: psycopg.Connection) -> None:
    """A search's lock (what its SELECT takes anyway), taken before it reads the recorded model."""
    if not conn.autocommit:
        conn.execute("LOCK TABLE knowledge_chunks IN ACCESS SHARE MODE")


def swap_vectors(conn: psycopg.Connection, job_id: int, dim: int, column_dim: int) -> None:
    """Replace every chunk's embedding with its staged one; a new dimension retypes the column and rebuilds the
    HNSW index. Runs in the caller's transaction: readers see the old vectors or the new ones, never a mix."""
    if dim != column_dim:
        conn.execute("DROP INDEX IF EXISTS knowledge_chunks_embedding_hnsw")
        conn.execute(sql.SQL("ALTER TABLE knowledge_chunks ALTER COLUMN embedding TYPE vector({}) USING NULL")
                     .format(sql.Literal(int(dim))))
    conn.execute("UPDATE knowledge_chunks c SET embedding = s.embedding FROM knowledge_reindex_vectors s "
                 "WHERE s.job_id = %s AND s.chunk_id = c.id", (job_id,))
    if dim != column_dim and dim <= HNSW_MAX_DIM:
        conn.execute("CREATE INDEX knowledge_chunks_embedding_hnsw ON knowledge_chunks "
                     "USING hnsw (embedding vector_cosine_ops)")
    conn.execute("DELETE FROM knowledge_reindex_vectors WHERE job_id = %s", (job_id,))


# ---------------------------------------------------------------- documents by id (the admin API)

def document_by_id(conn: psycopg.Connection, document_id: int) -> dict | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT id, source, title, kind, content_hash, tags, status, error, chunk_count, "
                           "created_at, updated_at FROM knowledge_documents WHERE id = %s",
                           (document_id,)).fetchone()
