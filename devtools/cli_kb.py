"""`wabot kb add|list|show|remove|search|jobs|reindex --tenant ID`: a tenant's knowledge base (issue 13).

- `add PATH [--tags T ...]`: a file, or every supported file under a folder, ingested here and now (unchanged
  files write nothing); files over INLINE_MAX_BYTES, or all with `--background`, become jobs for the `knowledge`
  worker instead (their bytes travel in the job row);
- `add --url URL [--allow-private-network]`: a job; the worker fetches the URL (outbound guard, size cap, timeout);
- `--wait` (add, reindex): follow the jobs' progress until they end;
- `list` (with whether a reindex is needed), `show SOURCE` (with its latest job), `remove SOURCE`;
- `jobs [--id N]`: the latest jobs and their progress;
- `reindex`: re-embed every chunk with the tenant's configured model, in the background; searches use the old
  vectors until the new ones are complete;
- `search QUERY [--limit N] [--tags T ...] [--document SOURCE]`: hybrid search, as the bot will use it.
Each command runs in one transaction of the tenant's database (committed when it succeeds); jobs are published
only after that commit.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from devtools.cli_common import connection as _conn
from devtools.cli_common import fail as _fail
from devtools.cli_common import load_tenant as _tenant
from devtools.cli_common import unit_of_work

INLINE_MAX_BYTES = 1024 * 1024  # larger files are embedded by the knowledge worker, in batches, with progress


def _store(tenant):
    from shared.knowledge.store import KnowledgeStore

    return KnowledgeStore(tenant)


def _tags(values) -> list[str]:
    return [t for v in values or [] for t in v.split(",") if t.strip()]


def cmd_kb_add(args) -> int:
    from shared.knowledge.jobs import JobRefused
    from shared.memory.store import EMBEDDER_FAILURES, embedder_problem

    settings, tenant = _tenant(args.tenant)
    if (args.path is None) == (args.url is None):
        return _fail("give a PATH or --url URL (one of them)", 2)
    tags = _tags(args.tags) if args.tags is not None else None  # no --tags: a known document keeps its tags
    try:
        if args.url is not None:
            jobs = _submit(settings, tenant, lambda tx: [_url_job(tx, args, tags)])
            return _report_jobs(tenant, jobs, args.wait, args.timeout)
        inline, queued = _split_files(Path(args.path), args.background)
        jobs = _submit(settings, tenant, lambda tx: [_file_job(tx, f, tags) for f in queued]) if queued else []
        code = _ingest_inline(tenant, inline, tags) if inline or not queued else 0
    except (ValueError, JobRefused) as exc:
        return _fail(str(exc), 2)
    except EMBEDDER_FAILURES as exc:
        return _fail(f"nothing changed: the embedder failed ({embedder_problem(tenant, exc)})")
    return max(code, _report_jobs(tenant, jobs, args.wait, args.timeout)) if jobs else code


def _split_files(path: Path, background: bool) -> tuple[list[Path] | Path, list[Path]]:
    """(what to ingest here: the path itself when nothing is queued, or files; what becomes jobs)."""
    from shared.knowledge.documents import KINDS_BY_EXTENSION

    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    queued = [f for f in files if f.suffix.lower() in KINDS_BY_EXTENSION
              and (background or f.stat().st_size > INLINE_MAX_BYTES)]
    if not queued:
        return path, []
    return [f for f in files if f not in queued], queued


def _submit(settings, tenant, make) -> list[dict]:
    """Jobs written in one transaction and published once it committed."""
    with unit_of_work(settings) as uow:
        with uow.transaction(tenant) as tx:
            return make(tx)


def _url_job(tx, args, tags) -> dict:
    from shared.knowledge.jobs import submit_url

    return submit_url(tx, url=args.url, tags=tags, allow_private=args.allow_private_network)


def _file_job(tx, file: Path, tags) -> dict:
    from shared.knowledge.jobs import submit_upload

    return submit_upload(tx, source=str(file.resolve()), filename=file.name, data=file.read_bytes(), tags=tags)


def _ingest_inline(tenant, target, tags) -> int:
    """Ingest here (one transaction): the path as before, or the listed files."""
    with _conn(tenant) as conn:
        store = _store(tenant)
        if isinstance(target, Path):
            results = store.ingest_path(conn, target, tags=tags)
        else:
            results = [r for f in target for r in store.ingest_path(conn, f, tags=tags)]
    for r in results:
        detail = f"{r.chunks} chunk(s)" if r.status not in ("skipped",) else ""
        print(f"{r.status:<9} {r.source}  {detail}{'  ' + r.reason if r.reason else ''}".rstrip())
    counts = {s: sum(r.status == s for r in results) for s in dict.fromkeys(r.status for r in results)}
    print(f"tenant {tenant.tenant_id}: " + (", ".join(f"{n} {s}" for s, n in counts.items()) or "no files"))
    return 1 if counts.get("failed") else 0


def _job_line(job: dict) -> str:
    total = "?" if job["chunks_total"] is None else job["chunks_total"]
    what = job["source"] or f"reindex to {job['embedding_model']} ({job['embedding_dim']}-d)"
    line = f"job {job['id']:>5} {job['status']:<7} {job['chunks_done']}/{total} chunk(s)  {what}"
    if job.get("result"):
        line += f"  [{job['result']}]"
    return line + (f"  error: {job['error']}" if job.get("error") else "")


def _report_jobs(tenant, jobs: list[dict], wait: bool, timeout: float) -> int:
    """Print the queued jobs; with `wait`, follow them until each ended (1 when any failed or timed out)."""
    from shared.db import knowledge_jobs

    for job in jobs:
        print(f"queued {_job_line(job)}")
    if not wait:
        print(f"follow with: wabot kb jobs --tenant {tenant.tenant_id}")
        return 0
    deadline, pending, shown = time.monotonic() + timeout, {j["id"] for j in jobs}, {}
    while pending and time.monotonic() < deadline:
        time.sleep(0.5)
        with _conn(tenant) as conn:
            rows = [knowledge_jobs.job(conn, i) for i in sorted(pending)]
        for row in rows:
            line = _job_line(row)
            if shown.get(row["id"]) != line:
                print(line, flush=True)
                shown[row["id"]] = line
            if row["status"] in ("done", "failed"):
                pending.discard(row["id"])
                jobs = [row if j["id"] == row["id"] else j for j in jobs]
    if pending:
        return _fail(f"jobs {sorted(pending)} still running after {timeout:.0f} s; see wabot kb jobs")
    return 1 if any(j["status"] == "failed" for j in jobs) else 0


def cmd_kb_jobs(args) -> int:
    from shared.db import knowledge_jobs

    _settings, tenant = _tenant(args.tenant)
    with _conn(tenant) as conn:
        rows = [knowledge_jobs.job(conn, args.id)] if args.id else knowledge_jobs.list_jobs(conn, args.limit)
    rows = [r for r in rows if r]
    if not rows and args.id:
        return _fail(f"no job {args.id} in tenant {tenant.tenant_id}")
    for r in rows:
        print(f"{_job_line(r)}  (created {r['created_at']:%Y-%m-%d %H:%M:%S})")
    if not rows:
        print(f"tenant {tenant.tenant_id}: no jobs")
    return 0


def cmd_kb_reindex(args) -> int:
    from shared.knowledge.jobs import JobRefused, submit_reindex

    settings, tenant = _tenant(args.tenant)
    try:
        jobs = _submit(settings, tenant, lambda tx: [submit_reindex(tx, _store(tenant))])
    except JobRefused as exc:
        return _fail(str(exc), 2)
    return _report_jobs(tenant, jobs, args.wait, args.timeout)


def cmd_kb_list(args) -> int:
    _settings, tenant = _tenant(args.tenant)
    with _conn(tenant) as conn:
        store = _store(tenant)
        rows = store.list(conn)
        status = store.embedding_status(conn)
    if status.reindex_needed:
        print(f"reindex needed: the vectors are of {status.stored_model} ({status.stored_dim}-d), the tenant is "
              f"configured for {status.configured_model} ({status.configured_dim}-d); searches use the stored "
              f"model until `wabot kb reindex --tenant {tenant.tenant_id}` completes")
    for r in rows:
        extra = f"  error: {r['error']}" if r["error"] else ""
        tags = f"  [{', '.join(r['tags'])}]" if r["tags"] else ""
        print(f"{r['status']:<6} {r['chunk_count']:>4} chunk(s)  {r['kind'] or '-':<8} {r['source']}  "
              f"\"{r['title']}\"{tags}{extra}")
    if not rows:
        print(f"tenant {tenant.tenant_id}: no documents (wabot kb add PATH --tenant {tenant.tenant_id})")
    return 0


def cmd_kb_show(args) -> int:
    _settings, tenant = _tenant(args.tenant)
    from shared.db import knowledge_jobs

    with _conn(tenant) as conn:
        doc = _store(tenant).show(conn, args.source)
        jobs = knowledge_jobs.list_jobs(conn, 1, source=args.source)
    if jobs:
        print(f"latest {_job_line(jobs[0])}")
    if doc is None:
        return _fail(f"no document {args.source!r} in tenant {tenant.tenant_id}")
    print(f"{doc['source']}: \"{doc['title']}\" ({doc['kind'] or '-'}, {doc['status']}, {doc['chunk_count']} "
          f"chunk(s), tags: {', '.join(doc['tags']) or '-'}, updated {doc['updated_at']:%Y-%m-%d %H:%M})")
    if doc["error"]:
        print(f"error: {doc['error']}")
    for c in doc["chunks"]:
        print(f"--- #{c['ordinal']} {' > '.join(c['heading_path']) or '(no heading)'}{_pages(c)}")
        print(c["text"])
    return 0


def _pages(row) -> str:
    if row["page_start"] is None:
        return ""
    same = row["page_end"] in (None, row["page_start"])
    return f" (p. {row['page_start']})" if same else f" (pp. {row['page_start']}-{row['page_end']})"


def cmd_kb_remove(args) -> int:
    _settings, tenant = _tenant(args.tenant)
    with _conn(tenant) as conn:
        removed = _store(tenant).remove(conn, args.source)
    if not removed:
        return _fail(f"no document {args.source!r} in tenant {tenant.tenant_id}")
    print(f"removed {args.source} and its chunks")
    return 0


def cmd_kb_search(args) -> int:
    _settings, tenant = _tenant(args.tenant)
    try:
        with _conn(tenant) as conn:
            found = _store(tenant).search(conn, args.query, limit=args.limit, tags=_tags(args.tags) or None,
                                          document=args.document)
    except ValueError as exc:
        return _fail(str(exc), 2)
    print(f"[{found.mode}]" + (f" {found.note}" if found.note else ""))
    for n, h in enumerate(found.hits, start=1):
        where = " > ".join([h.title, *h.heading_path])
        print(f"{n}. {h.score:.4f} {where}{_pages(h.__dict__)}  ({h.source}; {'+'.join(h.matched)})")
        print("   " + h.text.replace("\n", "\n   "))
    if not found.hits:
        print("no passages found")
    return 0


def _wait_arguments(q) -> None:
    q.add_argument("--wait", action="store_true", help="follow the jobs until they end")
    q.add_argument("--timeout", type=float, default=900.0, help="seconds --wait waits at most")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `kb` on the `wabot` parser."""
    kb = sub.add_parser("kb", help="a tenant's knowledge base: documents the bot answers from").add_subparsers(
        dest="kb_command", required=True)

    def command(name: str, fn, help_text: str):
        q = kb.add_parser(name, help=help_text)
        q.add_argument("--tenant", required=True)
        q.set_defaults(fn=fn)
        return q

    q = command("add", cmd_kb_add, "ingest a file, a folder or a URL (text, Markdown, HTML, PDF, DOCX)")
    q.add_argument("path", nargs="?")
    q.add_argument("--url", help="a document on the web, fetched by the knowledge worker")
    q.add_argument("--allow-private-network", action="store_true",
                   help="let the worker fetch --url from a private or loopback address (your own network)")
    q.add_argument("--background", action="store_true",
                   help=f"let the knowledge worker ingest every file (always for files over {INLINE_MAX_BYTES} "
                        "bytes)")
    q.add_argument("--tags", nargs="+", help="tags of these documents (words, or comma-separated)")
    _wait_arguments(q)
    q = command("jobs", cmd_kb_jobs, "the latest ingestion and reindex jobs, with their progress")
    q.add_argument("--id", type=int, help="only this job")
    q.add_argument("--limit", type=int, default=20)
    _wait_arguments(command("reindex", cmd_kb_reindex,
                            "re-embed the knowledge with the tenant's configured model, in the background"))
    command("list", cmd_kb_list, "the tenant's documents")
    command("show", cmd_kb_show, "a document and its chunks").add_argument("source")
    command("remove", cmd_kb_remove, "delete a document and its chunks").add_argument("source")
    q = command("search", cmd_kb_search, "hybrid search, as the bot will use it")
    q.add_argument("query")
    q.add_argument("--limit", type=int, default=5)
    q.add_argument("--tags", nargs="+", help="only documents with any of these tags")
    q.add_argument("--document", help="only this document (its source)")
