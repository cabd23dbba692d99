"""The admin API's knowledge endpoints (issue 13): operator tokens per tenant on every endpoint; a file upload or a
URL answered 202 with a job that the real `knowledge` worker runs; progress and errors in the job; documents
listed, shown, searched and removed; two tenants never see each other's documents; the OpenAPI description."""
from __future__ import annotations

import io
import uuid

import pytest
from psycopg.rows import dict_row

from conftest import start_worker
from helpers import wait_for
from ingress.admin_api.api import ROUTES
from ingress.admin_api.tokens import hash_token, new_token
from shared.db import operators
from shared.knowledge.jobs import MAX_UPLOAD_BYTES

API = "/api/v1/tenants"
DOC = b"# Bikes\n\n## Repairs\n\nA flat tyre repair takes one hour and costs 15 USD.\n\n## Rental\n\n" \
      b"City bikes rent for 20 USD a day.\n"


pytestmark = pytest.mark.usefixtures("knowledge_cleanup")

def _operator(db, tenant_id: str) -> str:
    token = new_token()
    with db(tenant_id) as conn:
        conn.row_factory = dict_row
        operators.create(conn, f"op-{uuid.uuid4().hex[:8]}", hash_token(token))
    return token


@pytest.fixture(scope="module")
def kb_worker(stack_env, tenants, data_dir):
    proc = start_worker(stack_env, data_dir / f"kb-api-worker-{uuid.uuid4().hex[:6]}.log", queues="knowledge",
                        concurrency=2, name="kbapi")
    yield proc
    proc.stop()


@pytest.fixture
def tokens(db):
    return {"alpha": _operator(db, "alpha"), "beta": _operator(db, "beta")}


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _upload(client, tenant: str, token: str, data: bytes = DOC, name: str | None = None, **form):
    name = name or f"bikes-{uuid.uuid4().hex[:6]}.md"
    return client.post(f"{API}/{tenant}/knowledge/documents", headers=_auth(token),
                       data={"file": (io.BytesIO(data), name, "text/markdown"), **form},
                       content_type="multipart/form-data")


def _job(client, tenant: str, token: str, job_id: int, timeout: float = 60) -> dict:
    def finished():
        job = client.get(f"{API}/{tenant}/knowledge/jobs/{job_id}", headers=_auth(token)).get_json()
        return job if job["status"] in ("done", "failed") else None
    return wait_for(finished, timeout, interval=0.2, what=f"knowledge job {job_id}")


def _endpoints() -> list[tuple[str, str, dict | None]]:
    """(method, path under the tenant, JSON body): every knowledge endpoint."""
    return [("GET", "/knowledge/documents", None), ("POST", "/knowledge/documents", None),
            ("GET", "/knowledge/documents/1", None), ("DELETE", "/knowledge/documents/1", None),
            ("POST", "/knowledge/urls", {"url": "https://example.com/faq"}), ("POST", "/knowledge/reindex", None),
            ("GET", "/knowledge/jobs", None), ("GET", "/knowledge/jobs/1", None),
            ("GET", "/knowledge/search?q=repair", None)]


def test_every_knowledge_route_is_tested_here():
    assert len([r for r in ROUTES if "/knowledge/" in r.rule]) == len(_endpoints())


@pytest.mark.parametrize("who", ["no token", "other tenant's token", "garbage token", "unknown tenant"])
def test_every_knowledge_endpoint_requires_the_tenants_operator(client, tokens, who):
    headers = {"no token": {}, "other tenant's token": _auth(tokens["beta"]), "garbage token": _auth("wbo_" + "x" * 43),
               "unknown tenant": _auth(tokens["alpha"])}[who]
    tenant = "nosuch" if who == "unknown tenant" else "alpha"
    for method, path, body in _endpoints():
        resp = client.open(f"{API}/{tenant}{path}", method=method, json=body, headers=headers)
        assert resp.status_code == 401, (who, method, path)
        assert resp.get_json()["error"] == "unauthorized"


def test_an_upload_is_queued_ingested_by_the_worker_listed_searched_and_removed(client, tokens, kb_worker, tenants):
    token = tokens["alpha"]
    resp = _upload(client, "alpha", token, tags="repairs, prices")
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert job["status"] in ("queued", "running", "done") and job["kind"] == "ingest"
    done = _job(client, "alpha", token, job["id"])
    assert (done["status"], done["result"]) == ("done", "added") and done["chunks_done"] == done["chunks_total"]
    listed = client.get(f"{API}/alpha/knowledge/documents", headers=_auth(token)).get_json()
    assert listed["embedding"]["reindex_needed"] is False
    assert listed["embedding"]["configured_model"] == listed["embedding"]["stored_model"] == \
        tenants.require("alpha").embedding_model
    doc = next(d for d in listed["documents"] if d["id"] == done["document_id"])
    assert doc["tags"] == ["prices", "repairs"] and doc["title"] == "Bikes" and doc["status"] == "ready"
    shown = client.get(f"{API}/alpha/knowledge/documents/{doc['id']}?chunks=true", headers=_auth(token)).get_json()
    assert shown["chunk_count"] == len(shown["chunks"]) >= 1 and shown["latest_job"]["id"] == job["id"]
    assert "chunks" not in client.get(f"{API}/alpha/knowledge/documents/{doc['id']}", headers=_auth(token)).get_json()
    found = client.get(f"{API}/alpha/knowledge/search?q=how much is a flat tyre repair&document={doc['source']}",
                       headers=_auth(token)).get_json()
    assert found["mode"] == "hybrid" and "15 USD" in found["hits"][0]["text"]
    same = _upload(client, "alpha", token, name=doc["source"])  # the same content again
    assert _job(client, "alpha", token, same.get_json()["id"])["result"] == "unchanged"
    removed = client.delete(f"{API}/alpha/knowledge/documents/{doc['id']}", headers=_auth(token))
    assert removed.status_code == 200 and removed.get_json()["removed"] is True
    assert client.get(f"{API}/alpha/knowledge/documents/{doc['id']}", headers=_auth(token)).status_code == 404


def test_a_bad_upload_fails_in_its_job_and_a_too_large_one_is_refused(client, tokens, kb_worker):
    token = tokens["alpha"]
    bad = _upload(client, "alpha", token, data=b"%PDF-1.4 broken", name=f"menu-{uuid.uuid4().hex[:6]}.pdf")
    assert bad.status_code == 202
    failed = _job(client, "alpha", token, bad.get_json()["id"])
    assert failed["status"] == "failed" and failed["error"]
    big = _upload(client, "alpha", token, data=b"x" * (MAX_UPLOAD_BYTES + 1), name="huge.txt")
    assert big.status_code == 400 and str(MAX_UPLOAD_BYTES) in big.get_json()["message"]
    missing = client.post(f"{API}/alpha/knowledge/documents", headers=_auth(token), data={},
                          content_type="multipart/form-data")
    assert missing.status_code == 400 and "'file'" in missing.get_json()["message"]


def test_a_url_is_queued_and_the_api_never_fetches_private_addresses(client, tokens, kb_worker, weather_api):
    token = tokens["beta"]
    resp = client.post(f"{API}/beta/knowledge/urls", json={"url": f"{weather_api.url}/v1/current?city=Oslo"},
                       headers=_auth(token))
    assert resp.status_code == 202 and resp.get_json()["url"].startswith(weather_api.url)
    failed = _job(client, "beta", token, resp.get_json()["id"])
    assert failed["status"] == "failed" and "private or reserved" in failed["error"]
    bad = client.post(f"{API}/beta/knowledge/urls", json={"url": "file:///etc/passwd"}, headers=_auth(token))
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_input"


def test_two_tenants_never_see_each_others_documents(client, tokens, kb_worker):
    marker = f"zebra{uuid.uuid4().hex[:6]}"
    resp = _upload(client, "alpha", tokens["alpha"], data=f"# Secret\n\nThe code word is {marker}.\n".encode())
    doc_id = _job(client, "alpha", tokens["alpha"], resp.get_json()["id"])["document_id"]
    beta = _auth(tokens["beta"])
    assert marker not in client.get(f"{API}/beta/knowledge/search?q={marker}", headers=beta).get_data(as_text=True)
    listed = client.get(f"{API}/beta/knowledge/documents", headers=beta).get_json()["documents"]
    assert all(d["title"] != "Secret" for d in listed)
    other = client.get(f"{API}/beta/knowledge/documents/{doc_id}", headers=beta)
    assert other.status_code == 404 or other.get_json()["title"] != "Secret"
    job = client.get(f"{API}/beta/knowledge/jobs/{resp.get_json()['id']}", headers=beta)
    assert job.status_code == 404 or job.get_json()["source"] != resp.get_json()["source"]
    assert client.get(f"{API}/alpha/knowledge/search?q={marker}", headers=_auth(tokens["alpha"])).get_json()["hits"]


def test_reindex_when_nothing_changed_is_refused_and_jobs_are_listed(client, tokens):
    resp = client.post(f"{API}/alpha/knowledge/reindex", headers=_auth(tokens["alpha"]))
    assert resp.status_code == 400 and "nothing to reindex" in resp.get_json()["message"]
    jobs = client.get(f"{API}/alpha/knowledge/jobs?limit=5", headers=_auth(tokens["alpha"])).get_json()["jobs"]
    assert len(jobs) <= 5 and all({"status", "chunks_done", "chunks_total"} <= set(j) for j in jobs)


def test_openapi_describes_the_knowledge_endpoints(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    ops = {(path, method) for path, methods in doc["paths"].items() for method in methods if "/knowledge/" in path}
    assert len(ops) == len(_endpoints())
    assert doc["paths"]["/tenants/{tenant_id}/knowledge/urls"]["post"]["responses"]["202"]
    assert doc["components"]["schemas"]["KnowledgeJob"]["properties"]["chunks_total"]
