"""The admin API's knowledge base endpoints (issue 13), under /api/v1/tenants/<tenant_id>/knowledge/.

Documents: list (with whether a reindex is needed), show one (its chunk count, its chunks with ?chunks=true, its
latest job), remove; add a file (multipart: `file`, optional `source`, `tags`) or a URL (JSON); reindex; jobs and
their progress; search. Adding and reindexing answer 202 with the job: the job row commits, then its task is
published to the `knowledge` queue (shared/knowledge/jobs.py); the ingress never parses, embeds or fetches a
document itself. Search embeds the one query, as a turn does.
"""
from __future__ import annotations


from flask import g, request
from werkzeug.datastructures import FileStorage

from ingress.admin_api import schemas as s
from ingress.admin_api.api import BODY_LIMITS, ApiError, api_route, bp
from ingress.admin_api.context import admin_context, unit_of_work
from shared.db import knowledge_jobs as jobs_repo
from shared.knowledge.jobs import MAX_UPLOAD_BYTES, JobRefused, public_job, submit_reindex, submit_upload, submit_url
from shared.knowledge.store import store_for

UPLOAD_OVERHEAD = 64 * 1024  # the multipart envelope and form fields around the file
def _connection():
    return admin_context().pools.connection(g.admin_tenant)


def _not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"no such {what} in this tenant")


def _submit(make) -> dict:
    """Write the job in one transaction; its task is published after the commit."""
    uow = unit_of_work(g.get("request_id"))
    try:
        with uow.transaction(g.admin_tenant) as tx:
            row = make(tx)
    except JobRefused as exc:
        raise ApiError(400, "invalid_input", str(exc)) from None
    uow.flush()
    return public_job(row)


@api_route("/knowledge/documents", "GET", summary="The knowledge documents, and whether a reindex is needed",
           response=s.KnowledgeDocumentList)
def list_documents():
    store = store_for(g.admin_tenant)
    with _connection() as conn:
        return {"documents": store.list(conn), "embedding": store.embedding_status(conn).as_json()}


@api_route("/knowledge/documents/<int:document_id>", "GET", summary="One document: chunk count, latest job, "
           "its chunks with ?chunks=true", query=s.KnowledgeDocumentQuery, response=s.KnowledgeDocumentDetail)
def show_document(document_id: int, query: dict):
    with _connection() as conn:
        document = jobs_repo.document_by_id(conn, document_id)
        if document is None:
            raise _not_found("document")
        shown = store_for(g.admin_tenant).show(conn, document["source"]) if query["chunks"] else document
        latest = jobs_repo.list_jobs(conn, 1, source=document["source"])
    return {**shown, "latest_job": public_job(latest[0]) if latest else None}


@api_route("/knowledge/documents/<int:document_id>", "DELETE", summary="Remove a document and its chunks",
           response=s.KnowledgeRemoved)
def remove_document(document_id: int):
    with _connection() as conn:
        document = jobs_repo.document_by_id(conn, document_id)
        if document is None:
            raise _not_found("document")
        removed = store_for(g.admin_tenant).remove(conn, document["source"])
    return {"document_id": document_id, "source": document["source"], "removed": removed}


def _upload() -> tuple[FileStorage, dict]:
    """The multipart file and its validated form fields (tags: repeated fields or comma-separated)."""
    file = request.files.get("file")
    if file is None or not file.filename:
        raise ApiError(400, "invalid_input", "send the document as the multipart/form-data part 'file'")
    form = {k: v for k, v in request.form.items() if k != "tags"}
    tags = [t.strip() for v in request.form.getlist("tags") for t in v.split(",") if t.strip()]
    if "tags" in request.form:
        form["tags"] = tags
    return file, s.KnowledgeUploadForm().load(form)


@api_route("/knowledge/documents", "POST", summary="Add or replace a document: multipart/form-data with the part "
           f"'file' (at most {MAX_UPLOAD_BYTES} bytes), optional 'source' and 'tags'; the knowledge worker ingests "
           "it (202 with the job)", response=s.KnowledgeJob, status=202)
def add_document():
    file, form = _upload()
    data = file.stream.read(MAX_UPLOAD_BYTES + 1)
    return _submit(lambda tx: submit_upload(tx, source=form.get("source") or file.filename, filename=file.filename,
                                            data=data, content_type=file.mimetype, tags=form["tags"]))


BODY_LIMITS[f"{bp.name}.{add_document.__name__}"] = MAX_UPLOAD_BYTES + UPLOAD_OVERHEAD


@api_route("/knowledge/urls", "POST", summary="Add or refresh a document from a URL, fetched by the knowledge worker "
           "(202 with the job); unchanged content changes nothing", body=s.KnowledgeUrlBody, response=s.KnowledgeJob,
           status=202)
def add_url(body: dict):
    return _submit(lambda tx: submit_url(tx, url=body["url"], tags=body["tags"]))


@api_route("/knowledge/reindex", "POST", summary="Re-embed every chunk with the tenant's configured model, in the "
           "background (202 with the job); searches use the old vectors until it completes", response=s.KnowledgeJob,
           status=202)
def reindex():
    return _submit(lambda tx: submit_reindex(tx, store_for(g.admin_tenant)))


@api_route("/knowledge/jobs", "GET", summary="The latest knowledge jobs with their progress",
           query=s.KnowledgeJobsQuery, response=s.KnowledgeJobList)
def list_jobs(query: dict):
    with _connection() as conn:
        rows = jobs_repo.list_jobs(conn, query["limit"], source=query.get("source"))
    return {"jobs": [public_job(r) for r in rows]}


@api_route("/knowledge/jobs/<int:job_id>", "GET", summary="One knowledge job: status, chunks done of total, error",
           response=s.KnowledgeJob)
def show_job(job_id: int):
    with _connection() as conn:
        row = jobs_repo.job(conn, job_id)
    if row is None:
        raise _not_found("job")
    return public_job(row)


@api_route("/knowledge/search", "GET", summary="Hybrid search of the knowledge, as the bot searches it",
           query=s.KnowledgeSearchQuery, response=s.KnowledgeSearchResult)
def search(query: dict):
    tags = [t.strip() for t in query.get("tags", "").split(",") if t.strip()] or None
    with _connection() as conn:
        found = store_for(g.admin_tenant).search(conn, query["q"], limit=query["limit"], tags=tags,
                                              document=query.get("document"))
    return {"mode": found.mode, "note": found.note, "hits": [h.as_json() for h in found.hits]}
