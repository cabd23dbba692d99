"""Knowledge jobs (issue 13): documents ingested by the `knowledge` worker in batches with visible progress, safe
under redelivery; URLs fetched through the outbound guard; reindexing to a new embedding model in the background,
switched atomically once complete. Real PostgreSQL with pgvector, real Redis, a real Celery worker consuming the
`knowledge` queue, a local HTTP server for URLs; the embedders are the real offline ones (a wrapper only watches
their calls)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import fresh_dsn, start_worker
from devtools.devstack import ROOT, start_redis
from devtools.localserver import LocalServer
from helpers import wait_for
from shared.config.settings import load_settings
from shared.config.tenants import load_tenants
from shared.db import knowledge as repo
from shared.db import knowledge_jobs as jobs_repo
from shared.db.migrate import migrate_tenant
from shared.db.pools import TenantPools
from shared.db.unit_of_work import UnitOfWork
from shared.knowledge.jobs import MAX_UPLOAD_BYTES, JobRefused, JobRun, run_job, submit_reindex, submit_upload, \
    submit_url
from shared.knowledge.reindex import _stage_batch
from shared.knowledge.store import KnowledgeStore
from shared.memory.embedders import HashEmbedder, embedder_for
from shared.queueing.tasks import TASK_KNOWLEDGE_JOB, enqueue, make_celery

NUMBERS = {"kbre": "+1 555 0171", "kbdim": "+1 555 0172"}


pytestmark = pytest.mark.usefixtures("knowledge_cleanup")

def handbook(n: int = 200, marker: str = "") -> bytes:
    """A Markdown document of exactly `n` chunks, section i naming the code zq<i>x."""
    parts = [f"# Handbook {marker}"]
    for i in range(n):
        parts.append(f"## Topic {i}\n\nSection {i} explains the procedure code zq{i:04d}x in detail. "
                     + "The staff follow the written steps carefully and record every result in the ledger. " * 10)
    return "\n\n".join(parts).encode()


@pytest.fixture(scope="module")
def kb_redis(data_dir):
    """A broker of the module's own: the session's worker also consumes the `knowledge` queue, and it knows
    neither kbre nor kbdim; their jobs must reach `kb_worker` only."""
    server = start_redis(data_dir / f"kb-redis-{uuid.uuid4().hex[:6]}")
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def kb_env(stack_env, data_dir, pg_url, kb_redis):
    """The stack's tenants plus two whose embedding model changed: kbre (local-hash -> wordllama-256) and kbdim
    (local-hash 256-d -> local-hash 128-d). Their databases start with the old model (see `old_tenant`); their
    jobs go through the module's own Redis."""
    base = (data_dir / "tenants.yaml").read_text()
    extra = "".join(f"""
  - tenant_id: {tid}
    waba_number: "{NUMBERS[tid]}"
    db_dsn: "{fresh_dsn(pg_url, tid)}"
    embedding_model: {model}
    config: {{business_name: {tid}, timezone: UTC{dim}}}
""" for tid, model, dim in (("kbre", "wordllama-256", ""), ("kbdim", "local-hash", ", embedding_dim: 128")))
    path = data_dir / f"tenants-kb-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(base.rstrip() + "\n" + extra)
    return {**stack_env, "TENANTS_FILE": str(path), "REDIS_URL": kb_redis}


@pytest.fixture(scope="module")
def kb_tenants(kb_env, tenants):
    registry = load_tenants(load_settings(kb_env, dotenv=False), env=kb_env)
    for tid in ("kbre", "kbdim"):
        migrate_tenant(old_tenant(registry.require(tid)))  # the column starts at the old model's dimension
    return registry


def old_tenant(tenant):
    """The tenant as it was configured before its model changed."""
    return dataclasses.replace(tenant, embedding_model="local-hash", embedding_dim=256)


@pytest.fixture(scope="module")
def kb_worker(kb_env, kb_tenants, data_dir):
    proc = start_worker(kb_env, data_dir / f"kb-worker-{uuid.uuid4().hex[:6]}.log", queues="knowledge",
                        concurrency=2, name="kb")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def celery(kb_env):
    return make_celery(load_settings(kb_env, dotenv=False))


@pytest.fixture
def uow_for(celery):
    """A unit of work publishing to the real Redis (what the CLI and the API do), and its pools closed after."""
    pools = []

    def make() -> UnitOfWork:
        pools.append(TenantPools(max_size=2))
        return UnitOfWork(pools[-1], lambda pub: enqueue(celery, pub.task, pub.payload, pub.countdown))
    yield make
    for p in pools:
        p.close()


def submit(uow: UnitOfWork, tenant, fn, **kwargs) -> dict:
    """Write the job and publish its task after the commit, as the CLI and the API do."""
    row = create(uow, tenant, fn, **kwargs)
    uow.flush()
    return row


def create(uow: UnitOfWork, tenant, fn, **kwargs) -> dict:
    """Write the job; its task waits in `uow` until `uow.flush()` (a task still on its way to the worker)."""
    with uow.transaction(tenant) as tx:
        return fn(tx, **kwargs)


def job_row(tenant, job_id: int) -> dict:
    with psycopg.connect(tenant.db_dsn, row_factory=dict_row, autocommit=True) as conn:
        return jobs_repo.job(conn, job_id)


def wait_job(tenant, job_id: int, timeout: float = 90) -> dict:
    return wait_for(lambda: (lambda r: r if r["status"] in ("done", "failed") else None)(job_row(tenant, job_id)),
                    timeout, interval=0.2, what=f"knowledge job {job_id}")


def sql(tenant, query: str, *params):
    with psycopg.connect(tenant.db_dsn, row_factory=dict_row, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


class Watching:
    """A real embedder that, before each batch, reads the job's committed progress from another connection:
    what `wabot kb jobs` or the API would show at that moment."""

    def __init__(self, inner, tenant, job_id_box: list):
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.tenant, self.box, self.seen = tenant, job_id_box, []

    def embed(self, texts):
        if self.box:
            row = job_row(self.tenant, self.box[0])
            self.seen.append((row["status"], row["chunks_done"], row["chunks_total"]))
        return self.inner.embed(texts)


# ---------------------------------------------------------------- ingestion jobs

def test_a_200_chunk_document_shows_progress_and_ends_searchable(kb_tenants, uow_for):
    alpha = kb_tenants.require("alpha")
    source = f"handbook-{uuid.uuid4().hex[:6]}.md"
    job = create(uow_for(), alpha, submit_upload, source=source, filename=source, data=handbook())
    assert job["status"] == "queued" and job["content_bytes"] > 0
    box: list = [job["id"]]
    watching = Watching(embedder_for(alpha), alpha, box)
    # this attempt runs here, so every batch can be watched; the worker test below runs one end to end
    assert run_job(JobRun(uow_for(), KnowledgeStore(alpha, watching)), job["id"]) == "done"
    assert watching.seen == [("running", 0, 200), ("running", 64, 200), ("running", 128, 200),
                             ("running", 192, 200)]
    done = job_row(alpha, job["id"])
    assert (done["status"], done["result"], done["chunks_done"], done["chunks_total"]) == ("done", "added", 200, 200)
    assert done["content_bytes"] is None and done["finished_at"] is not None  # the upload is dropped
    with psycopg.connect(alpha.db_dsn, row_factory=dict_row) as conn:
        found = KnowledgeStore(alpha).search(conn, "procedure code zq0150x", document=source)
    assert found.mode == "hybrid" and "zq0150x" in found.hits[0].text
    assert sql(alpha, "SELECT count(c.embedding) AS n FROM knowledge_chunks c JOIN knowledge_documents d "
                      "ON d.id = c.document_id WHERE d.source = %s", source) == [{"n": 200}]


def test_the_worker_ingests_a_queued_document_and_a_redelivered_task_leaves_one_copy(kb_tenants, kb_worker,
                                                                                     uow_for, celery):
    alpha = kb_tenants.require("alpha")
    source = f"handbook-{uuid.uuid4().hex[:6]}.md"
    job = submit(uow_for(), alpha, submit_upload, source=source, filename=source, data=handbook(marker="w"),
                 tags=["staff"])
    done = wait_job(alpha, job["id"])
    assert (done["status"], done["result"], done["chunks_done"]) == ("done", "added", 200), done
    count = f"SELECT count(*) AS n, count(DISTINCT c.ordinal) AS o FROM knowledge_chunks c " \
            f"JOIN knowledge_documents d ON d.id = c.document_id WHERE d.source = %s"
    assert sql(alpha, count, source) == [{"n": 200, "o": 200}]
    ids = sql(alpha, "SELECT c.id FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id "
                     "WHERE d.source = %s ORDER BY c.id", source)
    # the same task delivered again (Redis redelivers a task whose ack was lost): nothing changes
    enqueue(celery, TASK_KNOWLEDGE_JOB, {"tenant_id": "alpha", "job_id": job["id"], "request_id": None})
    # a worker died mid-run: the job is back to running with an expired lease, and its task comes again
    second = submit(uow_for(), alpha, submit_upload, source=source, filename=source, data=handbook(marker="v2"))
    wait_job(alpha, second["id"])
    sql(alpha, "UPDATE knowledge_jobs SET status = 'running', lease_until = now() - interval '1 second', "
               "finished_at = NULL, content = %s WHERE id = %s RETURNING id", handbook(marker="v2"), second["id"])
    enqueue(celery, TASK_KNOWLEDGE_JOB, {"tenant_id": "alpha", "job_id": second["id"], "request_id": None})
    again = wait_job(alpha, second["id"])
    assert again["status"] == "done" and again["attempts"] == 2
    assert sql(alpha, count, source) == [{"n": 200, "o": 200}]  # one copy, not two
    assert job_row(alpha, job["id"])["attempts"] == 1  # the redelivered first task did nothing
    assert sql(alpha, "SELECT tags FROM knowledge_documents WHERE source = %s", source) == [{"tags": ["staff"]}]
    assert ids  # (the first version's chunks were replaced by the second's)


def test_a_bad_file_fails_with_a_clear_error_and_the_previous_version_stays(kb_tenants, kb_worker, uow_for):
    alpha = kb_tenants.require("alpha")
    source = f"prices-{uuid.uuid4().hex[:6]}.pdf"
    good = submit(uow_for(), alpha, submit_upload, source=source, filename="prices.md",
                  data=b"# Prices\n\nA filling costs 95 EUR.\n")
    assert wait_job(alpha, good["id"])["status"] == "done"
    bad = submit(uow_for(), alpha, submit_upload, source=source, filename="prices.pdf", data=b"not a pdf at all")
    failed = wait_job(alpha, bad["id"])
    assert failed["status"] == "failed"
    assert "previous version is kept" in failed["error"] and "pdf" in failed["error"].lower()
    with psycopg.connect(alpha.db_dsn, row_factory=dict_row) as conn:
        store = KnowledgeStore(alpha)
        assert store.show(conn, source)["status"] == "ready"
        assert "95 EUR" in store.search(conn, "filling price", document=source).hits[0].text


def test_an_upload_over_the_limit_is_refused_naming_it(kb_tenants, uow_for):
    with pytest.raises(JobRefused, match=f"MAX_UPLOAD_BYTES.*{MAX_UPLOAD_BYTES}"):
        submit(uow_for(), kb_tenants.require("alpha"), submit_upload, source="huge.txt", filename="huge.txt",
               data=b"x" * (MAX_UPLOAD_BYTES + 1))
    assert not sql(kb_tenants.require("alpha"), "SELECT id FROM knowledge_jobs WHERE source = 'huge.txt'")


# ---------------------------------------------------------------- URLs

class Pages(LocalServer):
    """A web server with documents whose content type, not their path, says what they are."""

    def __init__(self):
        super().__init__()
        self.pages = {"/faq": ("text/markdown; charset=utf-8", b"# FAQ\n\nWe repair e-bikes within two days.\n"),
                      "/about": ("text/html", b"<html><head><title>About us</title></head><body><h1>Team</h1>"
                                              b"<p>Our mechanics have twenty years of experience.</p></body></html>")}

    def _wsgi(self, environ, start_response):
        kind, body = self.pages.get(environ["PATH_INFO"], ("text/plain", b""))
        start_response("200 OK" if body else "404 Not Found", [("Content-Type", kind)])
        return [body]


@pytest.fixture(scope="module")
def pages():
    server = Pages().start()
    yield server
    server.stop()


def test_a_url_is_ingested_by_its_content_type_and_an_unchanged_refetch_does_nothing(kb_tenants, kb_worker,
                                                                                      uow_for, pages):
    beta = kb_tenants.require("beta")
    url = f"{pages.base_url}/faq"
    first = submit(uow_for(), beta, submit_url, url=url, allow_private=True)
    done = wait_job(beta, first["id"])
    assert (done["status"], done["result"], done["source"]) == ("done", "added", url), done
    before = sql(beta, "SELECT id, xmin::text AS x FROM knowledge_documents WHERE source = %s", url)
    chunks = sql(beta, "SELECT c.id, c.xmin::text AS x FROM knowledge_chunks c JOIN knowledge_documents d "
                       "ON d.id = c.document_id WHERE d.source = %s", url)
    again = wait_job(beta, submit(uow_for(), beta, submit_url, url=url, allow_private=True)["id"])
    assert (again["status"], again["result"]) == ("done", "unchanged")
    assert sql(beta, "SELECT id, xmin::text AS x FROM knowledge_documents WHERE source = %s", url) == before
    assert sql(beta, "SELECT c.id, c.xmin::text AS x FROM knowledge_chunks c JOIN knowledge_documents d "
                     "ON d.id = c.document_id WHERE d.source = %s", url) == chunks
    about = wait_job(beta, submit(uow_for(), beta, submit_url, url=f"{pages.base_url}/about",
                                  allow_private=True)["id"])
    assert about["status"] == "done"
    assert sql(beta, "SELECT title, kind FROM knowledge_documents WHERE id = %s", about["document_id"]) == [
        {"title": "About us", "kind": "html"}]


def test_a_private_address_is_refused_unless_allowed(kb_tenants, kb_worker, uow_for, pages):
    beta = kb_tenants.require("beta")
    refused = wait_job(beta, submit(uow_for(), beta, submit_url, url=f"{pages.base_url}/faq?x=1")["id"])
    assert refused["status"] == "failed" and "private or reserved" in refused["error"]
    assert not sql(beta, "SELECT id FROM knowledge_documents WHERE source = %s", f"{pages.base_url}/faq?x=1")
    missing = wait_job(beta, submit(uow_for(), beta, submit_url, url=f"{pages.base_url}/nothing",
                                    allow_private=True)["id"])
    assert missing["status"] == "failed" and "HTTP 404" in missing["error"]
    with pytest.raises(JobRefused, match="http"):
        submit(uow_for(), beta, submit_url, url="ftp://example.com/a.txt")


# ---------------------------------------------------------------- reindex

class Counting:
    def __init__(self, inner):
        self.inner, self.name, self.dim, self.calls = inner, inner.name, inner.dim, 0

    def embed(self, texts):
        self.calls += 1
        return self.inner.embed(texts)


def _seed_old_model(tenant, n: int = 150) -> str:
    """Documents embedded with the tenant's old model (local-hash 256-d), as before its model changed."""
    source = f"seed-{uuid.uuid4().hex[:6]}.md"
    with psycopg.connect(tenant.db_dsn, row_factory=dict_row) as conn:
        KnowledgeStore(old_tenant(tenant)).ingest(conn, source, handbook(n), source)
    return source


def test_reindex_keeps_searches_on_the_old_model_until_it_switches_at_once(kb_env, kb_tenants, kb_worker, uow_for):
    tenant = kb_tenants.require("kbre")  # configured: wordllama-256; stored: local-hash
    source = _seed_old_model(tenant)
    new, old = Counting(embedder_for(tenant)), Counting(HashEmbedder(256))
    store = KnowledgeStore(tenant, new, model_embedder=lambda model, dim: old)
    with psycopg.connect(tenant.db_dsn, row_factory=dict_row) as conn:
        status = store.embedding_status(conn)
        assert status.reindex_needed and (status.stored_model, status.configured_model) == ("local-hash",
                                                                                             "wordllama-256")
        before = store.search(conn, "procedure code zq0042x")
    assert "zq0042x" in before.hits[0].text and "vector" in before.hits[0].matched
    assert (old.calls, new.calls) == (1, 0)  # the query was embedded with the stored (old) model
    listed = _wabot(kb_env, "kb", "list", "--tenant", "kbre")
    assert "reindex needed" in listed.stdout and "wordllama-256" in listed.stdout, listed.stderr
    uow = uow_for()
    job = create(uow, tenant, submit_reindex, store=store)
    assert create(uow_for(), tenant, submit_reindex, store=store)["id"] == job["id"]  # one reindex at a time
    # before its task reaches the worker, one batch is staged here: searches meanwhile use the old model
    run = JobRun(uow_for(), store)
    assert _stage_batch(run, job["id"], new.inner, 150) == 64
    with psycopg.connect(tenant.db_dsn, row_factory=dict_row) as conn:
        during = store.search(conn, "procedure code zq0042x")
        assert store.stored_model(conn) == ("local-hash", 256)
    assert "zq0042x" in during.hits[0].text and "vector" in during.hits[0].matched and old.calls == 2
    uow.flush()  # the task reaches the worker: it stages the rest, then swaps
    done = wait_job(tenant, job["id"])
    assert done["status"] == "done" and done["result"] == "reindexed" and done["chunks_done"] == 150, done
    with psycopg.connect(tenant.db_dsn, row_factory=dict_row) as conn:
        assert store.stored_model(conn) == ("wordllama-256", 256)
        assert not store.embedding_status(conn).reindex_needed
        calls = new.calls
        after = store.search(conn, "procedure code zq0042x")
        assert new.calls == calls + 1  # now the configured model embeds queries
        assert sql(tenant, "SELECT count(*) AS n FROM knowledge_reindex_vectors") == [{"n": 0}]
        vec = conn.execute("SELECT embedding::text AS e FROM knowledge_chunks c JOIN knowledge_documents d "
                           "ON d.id = c.document_id WHERE d.source = %s ORDER BY c.ordinal LIMIT 1",
                           (source,)).fetchone()["e"]
    assert "zq0042x" in after.hits[0].text
    want = new.inner.embed([KnowledgeStore.prepare(handbook(150), source).chunks[0].context_text()])[0]
    assert [round(float(x), 4) for x in vec.strip("[]").split(",")] == pytest.approx(want, abs=1e-3)
    with pytest.raises(JobRefused, match="nothing to reindex"):
        submit(uow_for(), tenant, submit_reindex, store=store)


def test_reindex_to_another_dimension_retypes_the_column(kb_tenants, kb_worker, uow_for):
    tenant = kb_tenants.require("kbdim")  # configured: local-hash 128-d; stored: local-hash 256-d
    _seed_old_model(tenant, 40)
    store = KnowledgeStore(tenant)
    with psycopg.connect(tenant.db_dsn, row_factory=dict_row) as conn:
        assert store.search(conn, "procedure code zq0007x").hits[0].text.count("zq0007x") == 1
    job = submit(uow_for(), tenant, submit_reindex, store=store)
    done = wait_job(tenant, job["id"])
    assert done["status"] == "done", done
    with psycopg.connect(tenant.db_dsn, row_factory=dict_row) as conn:
        assert repo.embedding_dim(conn) == 128 and store.stored_model(conn) == ("local-hash", 128)
        hit = store.search(conn, "procedure code zq0007x").hits[0]
        assert "zq0007x" in hit.text and "vector" in hit.matched
        assert conn.execute("SELECT count(*) AS n FROM pg_indexes WHERE indexname = "
                            "'knowledge_chunks_embedding_hnsw'").fetchone()["n"] == 1
        # a new document is written with the new model
        store.ingest(conn, "later.md", b"# Later\n\nThe workshop opens at eight.\n", "later.md")
        assert store.search(conn, "workshop opens").hits[0].source == "later.md"
        conn.rollback()


# ---------------------------------------------------------------- the CLI

def _wabot(env, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devtools.cli", *argv], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_background_add_jobs_and_reindex(kb_env, kb_tenants, kb_worker, tmp_path, pages):
    file = tmp_path / f"big-{uuid.uuid4().hex[:6]}.md"
    file.write_bytes(handbook(70))
    added = _wabot(kb_env, "kb", "add", str(file), "--background", "--wait", "--tenant", "alpha")
    assert added.returncode == 0, added.stderr
    assert "queued job" in added.stdout and "done" in added.stdout and "70/70" in added.stdout
    jobs = _wabot(kb_env, "kb", "jobs", "--tenant", "alpha").stdout
    assert str(file.resolve()) in jobs and "[added]" in jobs
    assert "latest job" in _wabot(kb_env, "kb", "show", str(file.resolve()), "--tenant", "alpha").stdout
    url = _wabot(kb_env, "kb", "add", "--url", f"{pages.base_url}/faq", "--allow-private-network", "--wait",
                 "--tenant", "alpha")
    assert url.returncode == 0 and "done" in url.stdout, url.stdout + url.stderr
    refused = _wabot(kb_env, "kb", "add", "--url", f"{pages.base_url}/about", "--wait", "--tenant", "alpha")
    assert refused.returncode == 1 and "private or reserved" in refused.stdout
    nothing = _wabot(kb_env, "kb", "reindex", "--tenant", "alpha")
    assert nothing.returncode == 2 and "nothing to reindex" in nothing.stderr
