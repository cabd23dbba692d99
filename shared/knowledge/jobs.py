"""Knowledge jobs (issue 13): a document upload, a URL or a reindex, run by a worker on the `knowledge` queue.

Submitting (`submit_upload`, `submit_url`, `submit_reindex`): the job row is written in the caller's unit-of-work
transaction and its task is registered with `publish_after_commit(tracked=True)`, so the task is published only
once the row committed (a rolled-back request publishes nothing), and a task lost in Redis is re-driven by the
accepted-work sweep. The upload's bytes wait in the job row (at most MAX_UPLOAD_BYTES; bigger is refused with
the limit named), so any worker host can read them; they are dropped when the job ends.

Running (`run_job`), at-least-once delivery: an attempt first claims the job (queued, or running with an expired
lease: its worker died); a copy of the task that finds the job finished does nothing, one that finds a live lease
is retried after it (`JobBusy`). An ingest parses and chunks, embeds in batches outside any transaction
(recording progress and renewing the lease after each batch), then writes the document and replaces its chunks in
one transaction (the store's atomic replace): a redelivered attempt starts over and replaces the same chunks again,
never adds a copy. An unchanged document (same content hash) writes nothing. A file that cannot be read ends
`failed` with the parser's reason and the last good version kept. Embedder outages are retried (`JobRetry`), up
to MAX_ATTEMPTS, then fail the job with the reason.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import psycopg

from shared.db import knowledge_jobs as jobs_repo
from shared.db.unit_of_work import Transaction, UnitOfWork
from shared.knowledge.documents import DocumentError
from shared.knowledge.fetch import DocumentFetchError, FetchedDocument, fetch_document, normalise_url
from shared.knowledge.reindex import SwapBusy, run_reindex
from shared.knowledge.store import IngestResult, KnowledgeStore, Prepared
from shared.llm.base import LLMError
from shared.memory.store import EMBEDDER_FAILURES, embedder_problem
from shared.queueing.tasks import TASK_KNOWLEDGE_JOB

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 5 * 1024 * 1024   # bytes wait in the job row; bigger is refused (and stays below MAX_WEBHOOK_BYTES)
LEASE_SECONDS = 120.0                 # a running attempt renews it after every batch
MAX_ATTEMPTS = 5                      # embedder outages: then the job fails with the reason
MAX_SOURCE_CHARS = 2000


class JobRefused(ValueError):
    """The job cannot be submitted (too large, bad URL, nothing to reindex): the message says why."""


class JobRetry(Exception):
    """Try the job again later (an embedder outage, the model switched under an ingest); the job is queued again."""


class JobBusy(Exception):
    """Another attempt holds the job's lease: look again after `retry_in` seconds."""

    def __init__(self, retry_in: float):
        super().__init__(f"the job is running elsewhere; look again in {retry_in:.0f} s")
        self.retry_in = retry_in


Fetcher = Callable[..., FetchedDocument]


def job_payload(tenant_id: str, job_id: int, request_id: str | None = None) -> dict:
    return {"tenant_id": tenant_id, "job_id": int(job_id), "request_id": request_id}


def _enqueue(tx: Transaction, row: dict) -> dict:
    """Publish the job's task once this transaction committed (tracked: re-driven if lost)."""
    tx.publish_after_commit(TASK_KNOWLEDGE_JOB, job_payload(tx.tenant.tenant_id, row["id"], tx.request_id),
                            tracked=True)
    return row


def _check_source(source: str) -> str:
    if not isinstance(source, str) or not source.strip() or len(source) > MAX_SOURCE_CHARS:
        raise JobRefused(f"the source must be a non-empty text of at most {MAX_SOURCE_CHARS} characters")
    return source.strip()


def submit_upload(tx: Transaction, *, source: str, filename: str, data: bytes, content_type: str | None = None,
                  tags: list[str] | None = None) -> dict:
    """A queued ingest of `data` (kept in the job row until it ends); its task follows the commit."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise JobRefused(f"the file has {len(data)} bytes; the limit (MAX_UPLOAD_BYTES) is {MAX_UPLOAD_BYTES}")
    if not data:
        raise JobRefused("the file is empty")
    row = jobs_repo.create_job(tx.conn, kind="ingest", source=_check_source(source), filename=filename or source,
                               content_type=content_type or None, content=data, tags=tags)
    return _enqueue(tx, row)


def submit_url(tx: Transaction, *, url: str, tags: list[str] | None = None, allow_private: bool = False) -> dict:
    """A queued ingest of a URL, fetched by the worker (the URL, normalised, is the document's source)."""
    try:
        url = normalise_url(url)
    except ValueError as exc:
        raise JobRefused(str(exc)) from None
    row = jobs_repo.create_job(tx.conn, kind="ingest", source=_check_source(url), url=url, tags=tags,
                               allow_private=allow_private)
    return _enqueue(tx, row)


def submit_reindex(tx: Transaction, store: KnowledgeStore) -> dict:
    """A queued reindex to the tenant's configured model; the running one when there is one. JobRefused when the
    stored vectors already are of that model or the database stores none."""
    running = jobs_repo.active_reindex(tx.conn)
    if running is not None:
        return running
    if store.mode(tx.conn) != "pgvector":
        raise JobRefused("this tenant's knowledge is searched by full text only: there are no vectors to reindex")
    status = store.embedding_status(tx.conn)
    if not status.reindex_needed:
        raise JobRefused(f"the knowledge vectors already are of model {status.configured_model!r} "
                         f"({status.configured_dim} dimensions): nothing to reindex")
    row = jobs_repo.create_job(tx.conn, kind="reindex", embedding_model=status.configured_model,
                               embedding_dim=status.configured_dim)
    return _enqueue(tx, row)


def public_job(row: dict) -> dict:
    """A job as the CLI and the API show it."""
    keys = ("id", "kind", "source", "url", "status", "result", "document_id", "chunks_done", "chunks_total",
            "error", "attempts", "embedding_model", "embedding_dim", "created_at", "started_at", "finished_at")
    return {k: row.get(k) for k in keys}


# ---------------------------------------------------------------- running

@dataclass
class JobRun:
    """What one attempt needs: its unit of work, the tenant's store, and how to fetch URLs."""

    uow: UnitOfWork
    store: KnowledgeStore
    fetcher: Fetcher = fetch_document
    lease_seconds: float = LEASE_SECONDS

    @property
    def tenant(self):
        return self.store.tenant

    def progress(self, job_id: int, done: int, total: int | None = None) -> None:
        """Progress and a renewed lease, committed at once (what `kb jobs` and the API show)."""
        with self.uow.transaction(self.tenant) as tx:
            jobs_repo.progress(tx.conn, job_id, done, total, self.lease_seconds)

    def finish(self, job_id: int, status: str, result: str | None, error: str | None = None,
               document_id: int | None = None, chunks: int | None = None) -> str:
        with self.uow.transaction(self.tenant) as tx:
            jobs_repo.finish_job(tx.conn, job_id, status=status, result=result, error=error,
                                 document_id=document_id, chunks=chunks)
        log.info("knowledge job finished", extra={"tenant_id": self.tenant.tenant_id, "job_id": job_id,
                                                  "status": status, "result": result})
        return status


def run_job(run: JobRun, job_id: int) -> str:
    """One attempt at the job (see the module docstring); returns its final status, or "finished" when a copy
    of the task finds it already done. Raises JobBusy / JobRetry for the task to retry."""
    with run.uow.transaction(run.tenant) as tx:
        job = jobs_repo.claim_job(tx.conn, job_id, run.lease_seconds)
        current = job or jobs_repo.job(tx.conn, job_id)
    if current is None or current["status"] in ("done", "failed"):
        return "finished"  # a redelivered copy, or a job deleted meanwhile: nothing to do
    if job is None:
        lease = current["lease_until"]
        wait = (lease - datetime.now(timezone.utc)).total_seconds() if lease else run.lease_seconds
        raise JobBusy(max(1.0, min(wait + 1.0, run.lease_seconds + 1.0)))
    try:
        return _run_reindex(run, job) if job["kind"] == "reindex" else _run_ingest(run, job)
    except (JobRetry, psycopg.OperationalError):
        raise  # retried by the task (a database away: the lease expires and the retry claims the job again)
    except Exception as exc:  # a bug or an unexpected input: the job must not stay "running" for ever
        log.exception("knowledge job failed", extra={"tenant_id": run.tenant.tenant_id, "job_id": job_id})
        return run.finish(job_id, "failed", "failed", f"internal error ({exc.__class__.__name__}); see the "
                                                      "knowledge worker's log")


def _run_reindex(run: JobRun, job: dict) -> str:
    """The reindex (shared/knowledge/reindex.py); an embedder outage gives the job back for a retry (staged
    batches are kept), up to MAX_ATTEMPTS, then fails it (the old vectors stay in use)."""
    try:
        return run_reindex(run, job)
    except SwapBusy as exc:
        _release(run, job["id"], str(exc))
        raise JobRetry(str(exc)) from exc
    except EMBEDDER_FAILURES as exc:
        return _embedder_failed(run, job, exc, "searches keep using the previous model")


def _embedder_failed(run: JobRun, job: dict, exc: Exception, kept: str):
    """An embedder failure: retried (the job released, JobRetry raised) while attempts remain and it may pass,
    else the job fails with the reason and what was `kept`."""
    why = embedder_problem(run.tenant, exc)
    if job["attempts"] < MAX_ATTEMPTS and not _permanent(exc):
        _release(run, job["id"], f"embedder failed, will retry: {why}")
        raise JobRetry(why) from exc
    return run.finish(job["id"], "failed", "failed", f"the embedder failed ({why}); {kept}")


def _release(run: JobRun, job_id: int, error: str) -> None:
    """Give the job back to the queue (the retry claims it again) with the reason it waits."""
    with run.uow.transaction(run.tenant) as tx:
        jobs_repo.release_job(tx.conn, job_id, error)


def _content(run: JobRun, job: dict) -> tuple[bytes, str, str | None]:
    """(bytes, file name, content type): fetched for a URL job, else the uploaded bytes from the job row."""
    if job["url"]:
        got = run.fetcher(job["url"], allow_private=job["allow_private"])
        return got.data, got.filename, got.content_type
    with run.uow.transaction(run.tenant) as tx:
        data = jobs_repo.job_content(tx.conn, job["id"])
    if data is None:
        raise DocumentError(job["filename"] or job["source"], "the uploaded content is gone")
    return data, job["filename"] or job["source"], job["content_type"]


def _run_ingest(run: JobRun, job: dict) -> str:
    """Fetch or read, parse, embed in batches with progress, then write at once (see the module docstring)."""
    source, tags = job["source"], job["tags"]
    try:
        data, filename, content_type = _content(run, job)
        prepared = run.store.prepare(data, filename, content_type)
    except DocumentFetchError as exc:
        return run.finish(job["id"], "failed", "failed", f"fetching the URL failed: {exc}")
    except DocumentError as exc:
        with run.uow.transaction(run.tenant) as tx:
            existing, tags = run.store.existing(tx.conn, source, tags)
            result = run.store.record_failure(tx.conn, source, existing, exc.filename, tags, exc)
        return run.finish(job["id"], "failed", "failed", result.reason, result.document_id)
    run.progress(job["id"], 0, len(prepared.chunks))
    try:
        return _embed_and_store(run, job, prepared)
    except JobRetry as exc:
        _release(run, job["id"], str(exc))
        raise
    except EMBEDDER_FAILURES as exc:
        return _embedder_failed(run, job, exc, "the previous version is kept")


def _permanent(exc: BaseException) -> bool:
    """Errors a retry will not cure: configuration, and LLM errors the provider marked not retryable."""
    return not isinstance(exc, (LLMError, OSError)) or (isinstance(exc, LLMError) and not exc.retryable)


def _embed_and_store(run: JobRun, job: dict, prepared: Prepared) -> str:
    """Unchanged: nothing written. Else embed with the stored model (batches, progress), then one transaction
    writes the document and its chunks, after checking the model did not switch meanwhile (a reindex)."""
    with run.uow.transaction(run.tenant) as tx:
        existing, tags = run.store.existing(tx.conn, job["source"], job["tags"])
        done = run.store.unchanged(tx.conn, job["source"], existing, prepared, tags)
        semantic = done is None and run.store.mode(tx.conn) == "pgvector"
        model = run.store.stored_model(tx.conn)
    if done is not None:
        return _finished(run, job, done)
    vectors = None
    if semantic:
        embedder = run.store.embedder_of(*model)
        vectors = run.store.embed_chunks(prepared.chunks, embedder,
                                         on_batch=lambda n: run.progress(job["id"], n, len(prepared.chunks)))
    with run.uow.transaction(run.tenant) as tx:
        existing, tags = run.store.existing(tx.conn, job["source"], job["tags"])  # locks chunks, then the row
        if semantic and run.store.stored_model(tx.conn) != model:
            raise JobRetry("the embedding model switched (a reindex finished) while this document was embedded")
        result = run.store.unchanged(tx.conn, job["source"], existing, prepared, tags) or \
            run.store.store_prepared(tx.conn, job["source"], existing, prepared, tags, vectors)
        jobs_repo.finish_job(tx.conn, job["id"], status="done", result=result.status, error=None,
                             document_id=result.document_id, chunks=result.chunks)
    log.info("knowledge job finished", extra={"tenant_id": run.tenant.tenant_id, "job_id": job["id"],
                                              "status": "done", "result": result.status})
    return "done"


def _finished(run: JobRun, job: dict, result: IngestResult) -> str:
    return run.finish(job["id"], "done", result.status, None, result.document_id, result.chunks)
