"""Reindex (issue 13): a tenant's knowledge vectors moved to its newly configured embedding model, in the background.

Searches and ingests meanwhile keep using the stored (old) model's vectors and query embeddings. The new vectors
are staged (`knowledge_reindex_vectors`, any dimension), EMBED_BATCH chunks per batch, each batch committed with
the job's progress. Chunks ingested during the reindex (written with the old model) have no staged vector yet and
are picked up by the next batches. The switch is one transaction: the chunks table locked (running searches and
ingests finish first, new ones wait), the last unstaged chunks embedded, every vector replaced (a new dimension
retypes the column and rebuilds the HNSW index) and the new model recorded. Readers see the old model and vectors
or the new ones, never a mix.

At-least-once: a redelivered attempt skips what is staged already (staging is keyed by job and chunk, inserts of a
staged pair do nothing) and continues; the swap runs once, in the transaction that marks the job done.
"""
from __future__ import annotations

import logging
import time
from typing import Protocol

import psycopg

from shared.db import knowledge as repo
from shared.db import knowledge_jobs as jobs_repo
from shared.db.unit_of_work import UnitOfWork
from shared.knowledge.store import EMBED_BATCH, KnowledgeStore, embed_texts
from shared.memory.embedders import Embedder

log = logging.getLogger(__name__)

SWAP_MAX_LEFT = 10 * EMBED_BATCH  # more unstaged chunks than this at the swap: stage them first, outside the lock
SWAP_TRIES = 20                   # lock timeouts (a long transaction reads the chunks) before the job is retried


class SwapBusy(Exception):
    """The chunks stayed locked by other transactions: the job is retried later (its staged vectors are kept)."""


class ReindexRun(Protocol):
    """What a reindex attempt needs (shared.knowledge.jobs.JobRun)."""

    uow: UnitOfWork
    store: KnowledgeStore
    lease_seconds: float

    @property
    def tenant(self): ...

    def progress(self, job_id: int, done: int, total: int | None = None) -> None: ...

    def finish(self, job_id: int, status: str, result: str | None, error: str | None = None,
               document_id: int | None = None, chunks: int | None = None) -> str: ...


def _context_text(row: dict) -> str:
    """What the chunk's vector is made of: as shared.knowledge.chunking.Chunk.context_text."""
    where = " > ".join(p for p in [row["title"], *row["heading_path"]] if p)
    return f"{where}\n\n{row['text']}" if where else row["text"]


def _vectors(embedder: Embedder, rows: list[dict]) -> list[tuple[int, str]]:
    got = embed_texts(embedder, [_context_text(r) for r in rows])
    return [(r["id"], repo.vector_literal(v)) for r, v in zip(rows, got)]


def _stage_batch(run: ReindexRun, job_id: int, embedder: Embedder, total: int) -> int:
    """Embed and stage the next batch (committed with the progress); returns how many were staged."""
    with run.uow.transaction(run.tenant) as tx:
        rows = jobs_repo.chunks_to_reembed(tx.conn, job_id, EMBED_BATCH)
    if not rows:
        return 0
    vectors = _vectors(embedder, rows)  # outside any transaction: the embedder may be slow
    with run.uow.transaction(run.tenant) as tx:
        jobs_repo.stage_vectors(tx.conn, job_id, vectors)
        staged = jobs_repo.count_staged(tx.conn, job_id)
        jobs_repo.progress(tx.conn, job_id, staged, max(total, staged), run.lease_seconds)
    return len(rows)


def run_reindex(run: ReindexRun, job: dict) -> str:
    """Stage every chunk's new vector in batches, then swap (see the module docstring). Embedder failures raise
    (the task retries; staged batches are kept)."""
    target = (job["embedding_model"], job["embedding_dim"])
    embedder = run.store.embedder_of(*target)
    if embedder.dim != target[1]:
        return run.finish(job["id"], "failed", "failed", f"embedding model {target[0]!r} makes {embedder.dim}-"
                                                         f"dimension vectors, not {target[1]}")
    with run.uow.transaction(run.tenant) as tx:
        total = jobs_repo.count_chunks(tx.conn)
    run.progress(job["id"], 0, total)
    for _ in range(SWAP_TRIES):
        while _stage_batch(run, job["id"], embedder, total):
            pass
        try:
            if _swap(run, job, embedder, target):
                return "done"
        except psycopg.errors.LockNotAvailable:
            time.sleep(0.5)
    raise SwapBusy(f"the knowledge chunks stayed locked through {SWAP_TRIES} tries; the switch is retried later")


def _swap(run: ReindexRun, job: dict, embedder: Embedder, target: tuple[str, int]) -> bool:
    """One transaction: lock, stage what was ingested since the last batch, replace, record, mark done. False
    (nothing changed) when too many chunks arrived since the last batch: they are staged first, without the lock."""
    with run.uow.transaction(run.tenant) as tx:
        jobs_repo.lock_chunks_for_swap(tx.conn)
        left = jobs_repo.chunks_to_reembed(tx.conn, job["id"], SWAP_MAX_LEFT + 1)
        if len(left) > SWAP_MAX_LEFT:
            return False
        if left:
            jobs_repo.stage_vectors(tx.conn, job["id"], _vectors(embedder, left))
        column_dim = repo.embedding_dim(tx.conn)
        jobs_repo.swap_vectors(tx.conn, job["id"], target[1], column_dim)
        jobs_repo.record_embedding_model(tx.conn, target[0], target[1], replace=True)
        chunks = jobs_repo.count_chunks(tx.conn)
        jobs_repo.finish_job(tx.conn, job["id"], status="done", result="reindexed", error=None, chunks=chunks)
    log.info("knowledge reindexed", extra={"tenant_id": run.tenant.tenant_id, "job_id": job["id"],
                                           "model": target[0], "dim": target[1], "chunks": chunks})
    return True
