"""The knowledge store (issue 13): documents ingested, refreshed and removed; hybrid search over their chunks.

Each store test runs on the embedded server with pgvector ("pgvector"), on the same server with the tenant set to
`vector_store: sql_fallback`, and on a PostgreSQL without pgvector at all (TEST_FALLBACK_DATABASE_URL, skipped when
none answers), each test inside one transaction that is rolled back.
"""
from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from devtools.devstack import ROOT
from shared.db import knowledge as repo
from shared.knowledge.store import KnowledgeStore, fuse
from shared.knowledge.terms import fulltext_terms
from shared.memory.embedders import embedder_for

from test_memory import STORE_MODES, CountingEmbedder, FailingEmbedder, make_tenant, tenant_in_mode

FILLER = ("Please bring your insurance card and arrive ten minutes early. Our team speaks English, German and "
          "Polish, and the reception answers the phone during the whole day. ") * 3
DOCS = {
    "hours.md": "# Opening hours\n\n## Weekdays and weekends\n\nWe are open Monday to Friday from 9:00 to 18:00 and "
                f"on Saturday from 10:00 to 14:00. {FILLER}\n\n## Holidays\n\nThe clinic is closed on public "
                f"holidays. {FILLER}\n",
    "parking.md": "# Parking\n\nFree parking is available behind the building; the entrance is on Mill Lane.\n",
    "prices/cleaning.md": f"# Prices\n\n## Cleaning\n\nA professional teeth cleaning costs 80 EUR. {FILLER}\n\n"
                          f"## Whitening\n\nWhitening costs 250 EUR per session. {FILLER}\n",
}


@pytest.fixture(scope="module", params=STORE_MODES)
def kb_tenant(request, settings, pg_url):
    yield from tenant_in_mode(request.param, settings, pg_url, "kb")


@pytest.fixture
def conn(kb_tenant):
    c = psycopg.connect(kb_tenant[1].db_dsn, row_factory=dict_row)
    yield c
    c.rollback()
    c.close()


@pytest.fixture
def embedder(kb_tenant):
    return CountingEmbedder(embedder_for(kb_tenant[1]))


@pytest.fixture
def store(kb_tenant, embedder):
    return KnowledgeStore(kb_tenant[1], embedder)


@pytest.fixture
def folder(tmp_path):
    for name, text in DOCS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "logo.png").write_bytes(b"\x89PNG not a document")
    return tmp_path


def snapshot(conn) -> dict:
    """Every knowledge row with its xmin (the transaction that last wrote it): equal snapshots, no writes."""
    docs = conn.execute("SELECT id, source, xmin::text AS x FROM knowledge_documents ORDER BY id").fetchall()
    chunks = conn.execute("SELECT id, document_id, xmin::text AS x FROM knowledge_chunks ORDER BY id").fetchall()
    return {"docs": docs, "chunks": chunks}


def chunk_ids(conn, source: str) -> list[int]:
    return [r["id"] for r in conn.execute("SELECT c.id FROM knowledge_chunks c JOIN knowledge_documents d "
                                          "ON d.id = c.document_id WHERE d.source = %s ORDER BY c.id", (source,))]


# ---------------------------------------------------------------- pure parts

def test_fusion_adds_reciprocal_ranks():
    fused = fuse({"vector": [7, 3, 5], "fulltext": [3, 9]}, k=60)
    assert [i for i, _, _ in fused] == [3, 7, 9, 5]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61) and fused[0][2] == ("vector", "fulltext")


def test_full_text_looks_for_whole_words_and_their_inflections():
    groups = fulltext_terms("When are you open on Saturdays?")
    assert groups[0][0] == "open" and {"opens", "opening", "opened"} <= set(groups[0])
    assert groups[1][0] == "saturdays" and "saturday" in groups[1]
    assert "massage" in fulltext_terms("Do you offer massages?")[1]
    assert "massages" in fulltext_terms("a massage")[0]
    assert fulltext_terms("who are you?") == [] and fulltext_terms("?!") == []  # stop words alone: nothing
    assert fulltext_terms("room 14") == [("room", "rooms", "rooming", "roomed"), ("14",)]


# ---------------------------------------------------------------- the store, in every mode

def test_the_embedding_column_exists_only_with_pgvector(conn, store, kb_tenant):
    expected = "pgvector" if kb_tenant[0] == "pgvector" else "sql"
    assert store.mode(conn) == expected
    assert (repo.embedding_dim(conn) is not None) == (kb_tenant[0] != "no_pgvector_server")
    if kb_tenant[0] != "no_pgvector_server":
        assert repo.embedding_dim(conn) == kb_tenant[1].embedding_dim


def test_a_folder_is_ingested_and_reingesting_changes_nothing(conn, store, embedder, folder, kb_tenant):
    results = store.ingest_path(conn, folder, tags=["Clinic", "faq"])
    by_name = {r.source.rsplit("/", 1)[-1]: r for r in results}
    assert {n: r.status for n, r in by_name.items()} == {"hours.md": "added", "parking.md": "added",
                                                        "cleaning.md": "added", "logo.png": "skipped"}
    assert "unsupported extension '.png'" in by_name["logo.png"].reason
    listed = store.list(conn)
    assert len(listed) == 3 and all(d["status"] == "ready" and d["tags"] == ["clinic", "faq"] for d in listed)
    assert sum(d["chunk_count"] for d in listed) == conn.execute("SELECT count(*) AS n FROM knowledge_chunks"
                                                                 ).fetchone()["n"] >= 4
    shown = store.show(conn, by_name["hours.md"].source)
    assert shown["title"] == "Opening hours" and shown["chunks"][0]["heading_path"] == ["Weekdays and weekends"]
    calls = len(embedder.calls)
    assert calls == (3 if kb_tenant[0] == "pgvector" else 0)  # one batch per document, none in sql mode
    before = snapshot(conn)
    again = store.ingest_path(conn, folder, tags=["faq", "clinic"])
    assert [r.status for r in again if r.status != "skipped"] == ["unchanged"] * 3
    assert snapshot(conn) == before and len(embedder.calls) == calls
    assert store.ingest_path(conn, folder / "hours.md", tags=["hours"])[0].status == "retagged"


def test_editing_one_file_replaces_only_its_chunks(conn, store, folder):
    store.ingest_path(conn, folder)
    hours, parking = str((folder / "hours.md").resolve()), str((folder / "parking.md").resolve())
    before = snapshot(conn)
    old_hours, old_doc = chunk_ids(conn, hours), store.show(conn, hours)["id"]
    (folder / "hours.md").write_text("# Opening hours\n\nFrom December we open Sundays, 11:00 to 15:00.\n")
    [result] = store.ingest_path(conn, folder / "hours.md")
    assert (result.status, result.document_id) == ("updated", old_doc)
    assert not set(chunk_ids(conn, hours)) & set(old_hours)
    others = [r for r in snapshot(conn)["chunks"] if r["document_id"] != old_doc]
    assert others == [r for r in before["chunks"] if r["document_id"] != old_doc]  # same rows, never rewritten
    assert chunk_ids(conn, parking) and store.search(conn, "Sundays").hits[0].source == hours
    assert not any("public holidays" in h.text for h in store.search(conn, "public holidays clinic closed").hits)


def test_removing_a_document_removes_its_chunks(conn, store, folder):
    store.ingest_path(conn, folder)
    parking = str((folder / "parking.md").resolve())
    doc_id = store.show(conn, parking)["id"]
    assert store.remove(conn, parking) is True
    assert store.show(conn, parking) is None and not store.remove(conn, parking)
    assert conn.execute("SELECT count(*) AS n FROM knowledge_chunks WHERE document_id = %s", (doc_id,)
                        ).fetchone()["n"] == 0
    assert all(h.source != parking for h in store.search(conn, "free parking Mill Lane").hits)


def test_a_question_finds_the_right_passage(conn, store, folder, kb_tenant):
    store.ingest_path(conn, folder)
    found = store.search(conn, "How much does a teeth cleaning cost?", limit=3)
    assert found.mode == ("hybrid" if kb_tenant[0] == "pgvector" else "fulltext") and found.note is None
    best = found.hits[0]
    assert (best.title, best.heading_path) == ("Prices", ["Cleaning"]) and "80 EUR" in best.text
    if kb_tenant[0] == "pgvector":
        assert best.matched == ("vector", "fulltext")
    assert [h.score for h in found.hits] == sorted((h.score for h in found.hits), reverse=True)
    hours = store.search(conn, "When are you open on Saturday?").hits[0]
    assert hours.heading_path == ["Weekdays and weekends"] and "Saturday" in hours.text
    assert {h.source for h in store.search(conn, "Saturday cleaning", document=hours.source).hits} == {hours.source}
    assert store.search(conn, "???").hits == []


def test_a_word_in_most_chunks_leaves_the_any_word_pool_to_rarer_words(conn, kb_tenant, embedder):
    """At scale a common word's posting list is slow to read and its first matches crowd the bounded pool: words in
    more than `common_word_chunks` chunks (by the planner's statistics) only rank, and rarer words fill the pool."""
    store = KnowledgeStore(kb_tenant[1], embedder, common_word_chunks=10)
    for i in range(30):
        store.ingest(conn, f"notes/{i}.md", f"# Salon note {i}\n\nThe salon team met on day {i}.".encode(), "n.md")
    store.ingest(conn, "colour.md", b"# Colour\n\nBalayage takes about three hours.", "colour.md")
    conn.execute("ANALYZE knowledge_chunks")
    groups = fulltext_terms("salon balayage")
    assert store.informative(conn, groups) == [groups[1]]
    hits = store.search(conn, "salon balayage", limit=5).hits
    assert "colour.md" in [h.source for h in hits]
    assert KnowledgeStore(kb_tenant[1], embedder).informative(conn, groups) == groups  # 30 chunks: all informative


def test_tags_filter_documents(conn, store, folder):
    store.ingest_path(conn, folder / "prices", tags=["prices"])
    store.ingest_path(conn, folder / "hours.md", tags=["hours"])
    assert {h.title for h in store.search(conn, "cleaning opening", tags=["prices"]).hits} == {"Prices"}
    assert {h.title for h in store.search(conn, "cleaning opening", tags=["hours"]).hits} == {"Opening hours"}
    assert store.search(conn, "cleaning opening", tags=["nothing"]).hits == []


def test_a_failing_embedder_keeps_the_old_version_and_search_falls_back(conn, store, folder, kb_tenant):
    store.ingest_path(conn, folder)
    hours = str((folder / "hours.md").resolve())
    before = snapshot(conn)
    down = KnowledgeStore(kb_tenant[1], FailingEmbedder())
    (folder / "hours.md").write_text("# Opening hours\n\nClosed for renovation.\n")
    if kb_tenant[0] == "pgvector":
        with pytest.raises(Exception, match="embeddings unreachable"):
            down.ingest_path(conn, folder / "hours.md")
        assert snapshot(conn) == before  # embedded before any write: nothing changed
        found = down.search(conn, "Saturday opening")
        assert found.mode == "fulltext" and "embeddings unreachable" in found.note
        assert found.hits[0].source == hours
    else:  # sql mode never calls the embedder
        assert down.ingest_path(conn, folder / "hours.md")[0].status == "updated"
        assert down.search(conn, "renovation").hits[0].source == hours


def test_an_unreadable_document_is_recorded_or_keeps_its_last_version(conn, store, folder):
    store.ingest_path(conn, folder / "parking.md")
    parking = str((folder / "parking.md").resolve())
    kept = store.ingest(conn, parking, b"   \n\n", "parking.md")
    assert kept.status == "failed" and "previous version is kept" in kept.reason
    assert store.show(conn, parking)["status"] == "ready" and store.search(conn, "parking").hits
    bad = store.ingest(conn, "broken.pdf", b"not a pdf", "broken.pdf")
    assert bad.status == "failed"
    row = store.show(conn, "broken.pdf")
    assert row["status"] == "failed" and row["error"] and row["chunks"] == []


def test_two_tenants_never_mix(db, tenants, folder):
    alpha, beta = tenants.require("alpha"), tenants.require("beta")
    with psycopg.connect(alpha.db_dsn, row_factory=dict_row) as a, \
            psycopg.connect(beta.db_dsn, row_factory=dict_row) as b:
        try:
            KnowledgeStore(alpha).ingest_path(a, folder / "parking.md")
            KnowledgeStore(beta).ingest_path(b, folder / "hours.md")
            assert {h.title for h in KnowledgeStore(alpha).search(a, "parking opening hours").hits} == {"Parking"}
            assert {h.title for h in KnowledgeStore(beta).search(b, "parking opening hours").hits} == {
                "Opening hours"}
        finally:
            a.rollback(), b.rollback()


# ---------------------------------------------------------------- the CLI

def _wabot(stack_env, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devtools.cli", *argv], env=stack_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_cli_add_list_search_remove(stack_env, tenants, tmp_path):
    folder = tmp_path / f"kb-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / "bikes.md").write_text("# Repairs\n\nA flat tyre repair takes one hour and costs 15 USD.\n")
    (folder / "notes.bin").write_bytes(b"\x00")
    source = str((folder / "bikes.md").resolve())
    added = _wabot(stack_env, "kb", "add", str(folder), "--tags", "repairs,prices", "--tenant", "beta")
    assert added.returncode == 0, added.stderr
    assert f"added     {source}" in added.stdout and "skipped" in added.stdout
    assert "unchanged" in _wabot(stack_env, "kb", "add", str(folder), "--tenant", "beta").stdout  # tags kept
    listed = _wabot(stack_env, "kb", "list", "--tenant", "beta").stdout
    assert source in listed and "[prices, repairs]" in listed
    assert "flat tyre" in _wabot(stack_env, "kb", "show", source, "--tenant", "beta").stdout
    found = _wabot(stack_env, "kb", "search", "how much is a flat tyre repair?", "--tenant", "beta")
    assert found.returncode == 0 and "[hybrid]" in found.stdout and "1. " in found.stdout
    assert "Repairs" in found.stdout.split("2. ")[0] and source in found.stdout
    removed = _wabot(stack_env, "kb", "remove", source, "--tenant", "beta")
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert _wabot(stack_env, "kb", "remove", source, "--tenant", "beta").returncode == 1
    assert source not in _wabot(stack_env, "kb", "list", "--tenant", "beta").stdout
