"""The console's Knowledge page (issue 14): the business's documents, as the admin API and `wabot kb` manage them.

- Upload: a multipart form (file, optional comma-separated tags) becomes a knowledge job exactly like the API's
  upload (shared.knowledge.jobs.submit_upload in a unit of work: the task is published after the row commits);
  the ingress never parses or embeds a document. The page follows the jobs' progress by polling `jobs.json`
  (static/knowledge.js) and reloads when one ends.
- Documents: the list (title, kind, tags, chunks, status or error, updated), a page per document with its chunks,
  remove (confirmed), and whether a reindex is needed (with a button to start it).
- Test question (`?q=`): the hybrid search a turn runs, with each passage's RRF score, cosine similarity and word
  coverage, and whether it passes the tenant's relevance cut, i.e. what the bot would put in its prompt.
Every page works without JavaScript (plain forms and links); the script only adds the live progress and the
confirmation."""
from __future__ import annotations


from flask import abort, g, jsonify, redirect, render_template, request, url_for

from ingress.admin_api.context import admin_context, unit_of_work
from ingress.console.auth import bp, signed_in
from shared.db import knowledge_jobs as jobs_repo
from shared.knowledge.jobs import MAX_UPLOAD_BYTES, JobRefused, public_job, submit_reindex, submit_upload
from shared.knowledge.store import KnowledgeSearch, MAX_QUERY_CHARS, store_for

JOBS_SHOWN = 10
SEARCH_LIMIT = 8        # passages shown when the tenant's bot does not search (knowledge_passages: 0)
def _connection():
    return admin_context().pools.connection(g.tenant)


def _job_json(row: dict) -> dict:
    """A job as the page's script reads it (times as ISO text)."""
    job = public_job(row)
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in job.items()}


def _submit(make) -> tuple[dict | None, str | None]:
    """Write the job in one transaction, its task published after the commit: (job, None) or (None, why not)."""
    uow = unit_of_work(g.get("request_id"))
    try:
        with uow.transaction(g.tenant) as tx:
            row = make(tx)
    except JobRefused as exc:
        return None, str(exc)
    uow.flush()
    return public_job(row), None


def _search(conn, question: str) -> dict:
    """The passages a turn would find for `question`: searched like the engine does (twice the passages it
    keeps), each marked relevant or not by the tenant's cut; `in_prompt` are the first relevant ones the prompt
    carries (at most `knowledge_passages`; the prompt's token budget may keep fewer)."""
    cfg = g.tenant.config
    limit = min(2 * cfg.knowledge_passages, 20) or SEARCH_LIMIT
    found: KnowledgeSearch = store_for(g.tenant).search(conn, question[:MAX_QUERY_CHARS], limit=limit)
    relevant = found.relevant(cfg.knowledge_min_similarity, cfg.knowledge_min_coverage)
    relevant_ids = {h.chunk_id for h in relevant}
    in_prompt = {h.chunk_id for h in relevant[:cfg.knowledge_passages]}
    hits = [{"hit": h, "citation": h.citation(), "relevant": h.chunk_id in relevant_ids,
             "in_prompt": h.chunk_id in in_prompt}
            for h in found.hits]
    return {"question": question, "mode": found.mode, "note": found.note, "hits": hits,
            "min_similarity": cfg.knowledge_min_similarity, "min_coverage": cfg.knowledge_min_coverage,
            "passages": cfg.knowledge_passages}


def _page(error: str | None = None):
    """The Knowledge page: status, upload form, jobs, documents, and the test question's answer when asked. A
    refused form is shown again with its reason, answered 200 (a 4xx page reads as a failed load in the browser's
    console, and the reason is on the page anyway)."""
    question = request.args.get("q", "").strip()
    store = store_for(g.tenant)
    with _connection() as conn:
        documents = store.list(conn)
        embedding = store.embedding_status(conn)
        jobs = jobs_repo.list_jobs(conn, JOBS_SHOWN)
        search = _search(conn, question) if question else None
    return render_template("console/knowledge.html", title="Knowledge", documents=documents, embedding=embedding,
                           jobs=[public_job(j) for j in jobs], search=search, question=question, error=error,
                           max_upload=MAX_UPLOAD_BYTES, highlight=request.args.get("job", type=int))


@bp.route("/t/<tenant_id>/knowledge")
@signed_in
def knowledge():
    return _page()


@bp.route("/t/<tenant_id>/knowledge/upload", methods=["POST"])
@signed_in
def knowledge_upload():
    """The upload form: a job like the API's; back to the page, which follows the job."""
    file = request.files.get("file")
    if file is None or not file.filename:
        return _page("Choose a file to upload.")
    data = file.stream.read(MAX_UPLOAD_BYTES + 1)
    tags = [t.strip() for t in request.form.get("tags", "").split(",") if t.strip()]
    job, refused = _submit(lambda tx: submit_upload(tx, source=file.filename, filename=file.filename, data=data,
                                                    content_type=file.mimetype, tags=tags))
    if refused:
        return _page(f"{file.filename}: {refused}")
    return redirect(url_for("console.knowledge", tenant_id=g.tenant.tenant_id, job=job["id"]), 303)


@bp.route("/t/<tenant_id>/knowledge/reindex", methods=["POST"])
@signed_in
def knowledge_reindex():
    job, refused = _submit(lambda tx: submit_reindex(tx, store_for(g.tenant)))
    if refused:
        return _page(refused)
    return redirect(url_for("console.knowledge", tenant_id=g.tenant.tenant_id, job=job["id"]), 303)


@bp.route("/t/<tenant_id>/knowledge/jobs.json")
@signed_in
def knowledge_jobs():
    """The latest jobs and their progress, for the page's poll."""
    with _connection() as conn:
        rows = jobs_repo.list_jobs(conn, JOBS_SHOWN)
    jobs = [_job_json(r) for r in rows]
    return jsonify({"jobs": jobs, "active": any(j["status"] in ("queued", "running") for j in jobs)})


def _document_or_404(conn, document_id: int) -> dict:
    """The tenant's document row (this tenant's database: another tenant's id is simply not there), else 404."""
    document = jobs_repo.document_by_id(conn, document_id)
    if document is None:
        abort(404)
    return document


@bp.route("/t/<tenant_id>/knowledge/documents/<int:document_id>")
@signed_in
def knowledge_document(document_id: int):
    """One document: its row, latest job and chunks in order."""
    with _connection() as conn:
        document = _document_or_404(conn, document_id)
        shown = store_for(g.tenant).show(conn, document["source"]) or {**document, "chunks": []}
        latest = jobs_repo.list_jobs(conn, 1, source=document["source"])
    return render_template("console/knowledge_document.html", title=document["title"] or document["source"],
                           document=shown, latest_job=public_job(latest[0]) if latest else None)


@bp.route("/t/<tenant_id>/knowledge/documents/<int:document_id>/remove", methods=["POST"])
@signed_in
def knowledge_remove(document_id: int):
    """Remove a document and its chunks (the page asks first); the bot stops finding it at once."""
    with _connection() as conn:
        document = _document_or_404(conn, document_id)
        store_for(g.tenant).remove(conn, document["source"])
    return redirect(url_for("console.knowledge", tenant_id=g.tenant.tenant_id, removed=document["title"]
                            or document["source"]), 303)
