"""Memory: the same behaviour with pgvector and with the SQL fallback, the embedders, and the memory tools.

Each store test runs three times: on the embedded server with pgvector ("pgvector"), on the same server with the
tenant set to `vector_store: sql_fallback`, and on a PostgreSQL without pgvector at all (TEST_FALLBACK_DATABASE_URL,
skipped when none answers). Every test works inside one transaction that is rolled back, so tests share the
databases without seeing each other's rows.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from shared.db.migrate import migrate_tenant
from shared.errors import ConfigError
from shared.llm.base import LLMError
from shared.memory.embedders import HashEmbedder, OpenAICompatEmbedder, embedder_for
from shared.memory.store import MemoryStore, NewItem
from shared.config.tenants import parse_tenants
from shared.tools.base import ToolContext, ToolError
from shared.tools.memory_tools import MEMORY_TOOLS

import factories
from conftest import fresh_dsn

SYSTEM_PG = os.environ.get("TEST_FALLBACK_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BERLIN = ZoneInfo("Europe/Berlin")
TOOLS = {t.name: t for t in MEMORY_TOOLS}


def _system_pg_without_vector() -> bool:
    try:
        with psycopg.connect(SYSTEM_PG, connect_timeout=2) as conn:
            return conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone() is None
    except Exception:
        return False


def make_tenant(settings, dsn: str, vector_store: str = "pgvector", **over):
    doc = {"tenant_id": "mem", "waba_number": "+1 555 0199", "db_dsn": dsn, "embedding_model": "local-hash",
           "vector_store": vector_store, "config": {"business_name": "Mem", "timezone": "Europe/Berlin"}}
    doc.update(over)
    return parse_tenants({"tenants": [doc]}, settings, {}).require("mem")


class CountingEmbedder:
    """Wraps an embedder and records each call (the external-service boundary, so counting it is fair)."""

    def __init__(self, inner):
        self.inner, self.name, self.dim, self.calls = inner, inner.name, inner.dim, []

    def embed(self, texts):
        self.calls.append(list(texts))
        return self.inner.embed(texts)


class FailingEmbedder:
    name, dim = "down", 256

    def embed(self, texts):
        raise LLMError("embeddings unreachable: ConnectError")


STORE_MODES = ["pgvector", "sql_fallback", "no_pgvector_server"]


def tenant_in_mode(mode: str, settings, pg_url: str, prefix: str):
    """A migrated tenant whose store runs in `mode`: pgvector, sql_fallback by choice, or pgvector asked for on a
    server without it (skipped when none answers); (mode, tenant), its database dropped afterwards."""
    if mode == "no_pgvector_server":
        if not _system_pg_without_vector():
            pytest.skip("no PostgreSQL without pgvector answers at TEST_FALLBACK_DATABASE_URL")
        tenant = make_tenant(settings, fresh_dsn(SYSTEM_PG, f"{prefix}fallback"), "pgvector")  # asks, cannot have it
    else:
        tenant = make_tenant(settings, fresh_dsn(pg_url, prefix), mode)
    migrate_tenant(tenant)
    yield mode, tenant
    if mode == "no_pgvector_server":
        with psycopg.connect(SYSTEM_PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{conninfo_to_dict(tenant.db_dsn)["dbname"]}"')


@pytest.fixture(scope="module", params=STORE_MODES)
def mem_tenant(request, settings, pg_url):
    yield from tenant_in_mode(request.param, settings, pg_url, "mem")


@pytest.fixture
def conn(mem_tenant):
    """A connection in one transaction, rolled back at the end of the test."""
    c = psycopg.connect(mem_tenant[1].db_dsn, row_factory=dict_row)
    yield c
    c.rollback()
    c.close()


@pytest.fixture
def store(mem_tenant):
    return MemoryStore(mem_tenant[1], CountingEmbedder(HashEmbedder(256)))


@pytest.fixture
def expected_mode(mem_tenant):
    return "pgvector" if mem_tenant[0] == "pgvector" else "sql"


def item(title, content="", kind="note", starts_at=None):
    return NewItem(kind=kind, title=title, content=content, starts_at=starts_at)


def ctx_for(tenant, conn, store, user_id, now=datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)):
    return ToolContext(tenant=tenant, conn=conn, user_id=user_id, user_phone="1555", memory=store,
                       clock=lambda: now)


# ---------------------------------------------------------------- the store, in every mode

def test_mode_follows_tenant_and_database(conn, store, expected_mode):
    assert store.mode(conn) == expected_mode


def test_a_user_never_sees_another_users_rows(conn, store):
    alice, bob = factories.user(conn)["id"], factories.user(conn)["id"]
    [a_id] = store.add(conn, alice, [item("Dentist appointment", "with Dr Weber")])
    assert store.search(conn, bob, "dentist appointment") == []
    [b_id] = store.add(conn, bob, [item("Dentist appointment", "with Dr Weber")])  # identical text
    assert [h.id for h in store.search(conn, alice, "dentist")] == [a_id]
    assert [h.id for h in store.search(conn, bob, "dentist")] == [b_id]
    assert store.get(conn, bob, a_id) is None


def test_a_users_results_are_complete_among_many_users(conn, store):
    others = [factories.user(conn)["id"] for _ in range(40)]
    for uid in others:  # 800 near-identical rows of other users around the target's 3
        store.add(conn, uid, [item(f"Dentist appointment {k}", "dentist check-up") for k in range(20)])
    me = factories.user(conn)["id"]
    mine = store.add(conn, me, [item("Dentist appointment", "cleaning"), item("Dentist bill", "pay 80 EUR"),
                                item("Call the dentist", "to move the appointment")])
    conn.execute("ANALYZE memory_chunks")
    for scan in ("seqscan", "bitmapscan"):  # tempt the planner into the approximate HNSW index
        conn.execute(f"SET LOCAL enable_{scan} = off")
    hits = store.search(conn, me, "dentist appointment", limit=5)
    assert sorted(h.id for h in hits) == sorted(mine)


def test_tenant_knowledge_is_visible_to_every_user(conn, store):
    alice, bob = factories.user(conn)["id"], factories.user(conn)["id"]
    [k_id] = store.add(conn, None, [NewItem("knowledge", "Opening hours", "Monday to Friday 9:00-18:00")])
    for uid in (alice, bob):
        hits = store.search(conn, uid, "opening hours")
        assert [(h.id, h.scope) for h in hits] == [(k_id, "tenant")]
    assert not store.delete(conn, alice, k_id)  # users cannot delete the business's knowledge
    assert not store.update(conn, alice, k_id, content="closed")


def test_ranking_puts_the_relevant_item_first(conn, store):
    uid = factories.user(conn)["id"]
    ids = store.add(conn, uid, [item("Buy milk", "and bread"), item("Dentist appointment", "with Dr Weber"),
                                item("Friday yoga class"), item("Anna birthday", "March 3")])
    hits = store.search(conn, uid, "when is my dentist appointment?")
    assert hits[0].id == ids[1]
    assert hits[0].title == "Dentist appointment" and hits[0].scope == "user"
    assert all(0 <= h.score <= 1 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_min_score_drops_weak_matches(conn, store):
    uid = factories.user(conn)["id"]
    dentist, yoga = store.add(conn, uid, [item("Dentist appointment", "with Dr Weber"), item("Friday yoga class")])
    assert {dentist, yoga} <= {h.id for h in store.search(conn, uid, "dentist appointment friday")}
    strong = store.search(conn, uid, "dentist appointment friday", min_score=0.45)
    assert [h.id for h in strong] == [dentist] and strong[0].score >= 0.45


def test_relevant_for_prompt_keeps_related_items_only(conn, store):
    uid = factories.user(conn)["id"]
    dentist, _ = store.add(conn, uid, [item("Dentist appointment", "with Dr Weber"), item("Buy milk", "and bread")])
    assert [h.id for h in store.relevant_for_prompt(conn, uid, "When is my dentist appointment?")] == [dentist]
    assert store.relevant_for_prompt(conn, uid, "") == []
    assert store.relevant_for_prompt(conn, uid, "👍") == []


def test_relevant_for_prompt_survives_a_failing_embedder(conn, mem_tenant, store):
    uid = factories.user(conn)["id"]
    [dentist] = store.add(conn, uid, [item("Dentist appointment", "with Dr Weber")])
    down = MemoryStore(mem_tenant[1], FailingEmbedder())
    assert [h.id for h in down.relevant_for_prompt(conn, uid, "my dentist appointment")] == [dentist]


def test_list_events_is_a_half_open_range(conn, store):
    alice, bob = factories.user(conn)["id"], factories.user(conn)["id"]
    start, end = datetime(2026, 11, 23, tzinfo=BERLIN), datetime(2026, 11, 30, tzinfo=BERLIN)
    at_start, inside, at_end = store.add(conn, alice, [
        item("Check-up", kind="event", starts_at=start),
        item("Cleaning", kind="event", starts_at=datetime(2026, 11, 29, 23, 30, tzinfo=BERLIN)),
        item("Next week", kind="event", starts_at=end)])
    store.add(conn, alice, [item("Not an event", kind="task", starts_at=start + timedelta(hours=1))])
    store.add(conn, bob, [item("Bob's event", kind="event", starts_at=start + timedelta(hours=2))])
    [closed] = store.add(conn, None, [NewItem("event", "Clinic closed", "holiday", start + timedelta(days=1))])
    events = store.list_events(conn, alice, start, end)
    assert [e.id for e in events] == [at_start, closed, inside]
    assert events[2].starts_at == datetime(2026, 11, 29, 22, 30, tzinfo=timezone.utc)


def test_update_re_embeds_and_only_touches_own_rows(conn, store):
    alice, bob = factories.user(conn)["id"], factories.user(conn)["id"]
    [item_id] = store.add(conn, alice, [item("Buy milk", "and bread")])
    assert not store.update(conn, bob, item_id, title="Hacked")
    assert store.get(conn, alice, item_id).title == "Buy milk"
    assert store.update(conn, alice, item_id, title="Dentist appointment", content="with Dr Weber")
    assert [h.id for h in store.search(conn, alice, "dentist appointment", min_score=0.45)] == [item_id]
    assert store.search(conn, alice, "milk bread", min_score=0.45) == []
    with pytest.raises(ValueError):
        store.update(conn, alice, item_id, owner=bob)


def test_delete_only_own_rows(conn, store):
    alice, bob = factories.user(conn)["id"], factories.user(conn)["id"]
    [item_id] = store.add(conn, alice, [item("Dentist appointment")])
    assert not store.delete(conn, bob, item_id)
    assert [h.id for h in store.search(conn, alice, "dentist")] == [item_id]
    assert store.delete(conn, alice, item_id)
    assert store.search(conn, alice, "dentist") == []
    assert not store.delete(conn, alice, item_id)


def test_add_embeds_all_items_in_one_call(conn, store, expected_mode):
    uid = factories.user(conn)["id"]
    ids = store.add(conn, uid, [item(f"Note {i}", f"content {i}") for i in range(5)])
    assert len(set(ids)) == 5
    calls = store.embedder.calls
    assert [len(c) for c in calls] == ([5] if expected_mode == "pgvector" else [])
    assert store.add(conn, uid, []) == []
    assert len(calls) == (1 if expected_mode == "pgvector" else 0)


def test_bad_input_is_a_clear_error(conn, store):
    uid = factories.user(conn)["id"]
    with pytest.raises(ValueError, match="kind"):
        NewItem("reminder", "x", "y")
    with pytest.raises(ValueError, match="time zone"):
        NewItem("event", "x", "y", datetime(2026, 11, 25, 10, 0))
    with pytest.raises(ValueError, match="word"):
        store.search(conn, uid, "?!")
    with pytest.raises(ValueError, match="limit"):
        store.search(conn, uid, "dentist", limit=0)


# ---------------------------------------------------------------- the tools, in every mode

def test_tools_save_search_list_and_delete_in_the_tenant_time_zone(conn, mem_tenant, store):
    tenant = mem_tenant[1]
    uid = factories.user(conn)["id"]
    ctx = ctx_for(tenant, conn, store, uid)  # now: Wednesday 2026-11-25 12:00 UTC
    saved = TOOLS["upsert_item"].invoke(ctx, {"kind": "event", "title": "Dentist appointment",
                                              "starts_at": "2026-11-27T15:30"})
    assert saved["created"] and saved["item"]["starts_at"] == "2026-11-27T15:30:00+01:00"
    row = conn.execute("SELECT starts_at FROM memory_chunks WHERE id = %s", (saved["id"],)).fetchone()
    assert row["starts_at"] == datetime(2026, 11, 27, 14, 30, tzinfo=timezone.utc)
    TOOLS["upsert_item"].invoke(ctx, {"kind": "event", "title": "Late on Sunday", "starts_at": "2026-11-29T23:30"})
    TOOLS["upsert_item"].invoke(ctx, {"kind": "event", "title": "Next Monday", "starts_at": "2026-11-30T00:00"})

    week = TOOLS["list_events"].invoke(ctx, {})
    assert (week["start"], week["end"]) == ("2026-11-23T00:00:00+01:00", "2026-11-30T00:00:00+01:00")
    assert [e["title"] for e in week["events"]] == ["Dentist appointment", "Late on Sunday"]
    friday = TOOLS["list_events"].invoke(ctx, {"start": "2026-11-27", "end": "2026-11-27"})  # the whole day
    assert [e["title"] for e in friday["events"]] == ["Dentist appointment"]
    weekend = TOOLS["list_events"].invoke(ctx, {"start": "2026-11-28", "end": "2026-11-30"})  # end excluded
    assert [e["title"] for e in weekend["events"]] == ["Late on Sunday"]

    found = TOOLS["search_memory"].invoke(ctx, {"query": "dentist"})
    assert found["results"][0]["id"] == saved["id"]
    json.dumps([saved, week, found])  # results are JSON-serialisable as they are

    moved = TOOLS["upsert_item"].invoke(ctx, {"id": saved["id"], "kind": "event", "title": "Dentist appointment",
                                              "starts_at": "2026-11-28T09:00:00Z"})
    assert not moved["created"] and moved["item"]["starts_at"] == "2026-11-28T10:00:00+01:00"
    assert TOOLS["delete_item"].invoke(ctx, {"id": saved["id"]}) == {"deleted": saved["id"]}
    assert TOOLS["search_memory"].invoke(ctx, {"query": "dentist"})["count"] == 0


def test_tools_refuse_another_users_item(conn, mem_tenant, store):
    tenant = mem_tenant[1]
    alice, bob = factories.user(conn)["id"], factories.user(conn)["id"]
    saved = TOOLS["upsert_item"].invoke(ctx_for(tenant, conn, store, alice),
                                        {"kind": "note", "title": "Alice's secret", "content": "PIN 1234"})
    as_bob = ctx_for(tenant, conn, store, bob)
    with pytest.raises(ToolError, match="no such item"):
        TOOLS["upsert_item"].invoke(as_bob, {"id": saved["id"], "kind": "note", "title": "mine now"})
    with pytest.raises(ToolError, match="no such item"):
        TOOLS["delete_item"].invoke(as_bob, {"id": saved["id"]})
    assert TOOLS["search_memory"].invoke(as_bob, {"query": "secret PIN"})["count"] == 0
    assert store.get(conn, alice, saved["id"]).title == "Alice's secret"


@pytest.mark.parametrize("tool, args, message", [
    ("upsert_item", {"kind": "note"}, "'title' is a required property"),
    ("upsert_item", {"kind": "reminder", "title": "x"}, "is not one of"),
    ("upsert_item", {"kind": "note", "title": "x", "user_id": 1}, "Additional properties"),
    ("upsert_item", {"kind": "event", "title": "x"}, "an event needs starts_at"),
    ("upsert_item", {"kind": "event", "title": "x", "starts_at": "next friday"}, "ISO 8601"),
    ("upsert_item", {"kind": "note", "title": "x", "id": "7"}, "is not of type 'integer'"),
    ("search_memory", {"query": "x", "limit": 500}, "is greater than the maximum"),
    ("search_memory", {"query": "..."}, "at least one word"),
    ("list_events", {"start": "2026-11-30", "end": "2026-11-23"}, "start must be before end"),
    ("delete_item", {}, "'id' is a required property"),
])
def test_tools_validate_their_arguments(conn, mem_tenant, store, tool, args, message):
    uid = factories.user(conn)["id"]
    before = conn.execute("SELECT count(*) AS n FROM memory_chunks").fetchone()["n"]
    with pytest.raises(ToolError, match=message):
        TOOLS[tool].invoke(ctx_for(mem_tenant[1], conn, store, uid), args)
    assert conn.execute("SELECT count(*) AS n FROM memory_chunks").fetchone()["n"] == before


def test_tool_schemas_are_strict_objects():
    assert set(TOOLS) == {"upsert_item", "search_memory", "list_events", "delete_item"}
    for tool in MEMORY_TOOLS:
        assert tool.input_schema["type"] == "object" and tool.input_schema["additionalProperties"] is False
        assert tool.openai_schema()["function"]["parameters"]["type"] == "object"
    assert TOOLS["search_memory"].annotations.readOnlyHint and TOOLS["list_events"].annotations.readOnlyHint
    assert TOOLS["delete_item"].annotations.destructiveHint and not TOOLS["upsert_item"].annotations.readOnlyHint


# ---------------------------------------------------------------- pgvector only: rows written without embeddings

def test_rows_written_in_sql_mode_are_found_after_backfill(settings, pg_url):
    vector_tenant = make_tenant(settings, fresh_dsn(pg_url, "memfill"))
    migrate_tenant(vector_tenant)
    sql_tenant = make_tenant(settings, vector_tenant.db_dsn, "sql_fallback")
    with psycopg.connect(vector_tenant.db_dsn, row_factory=dict_row) as conn:
        uid = factories.user(conn)["id"]
        [item_id] = MemoryStore(sql_tenant, FailingEmbedder()).add(conn, uid, [item("Dentist appointment")])
        vector_store = MemoryStore(vector_tenant, HashEmbedder(256))
        assert vector_store.search(conn, uid, "dentist") == []
        assert vector_store.backfill_embeddings(conn) == 1
        assert [h.id for h in vector_store.search(conn, uid, "dentist")] == [item_id]


# ---------------------------------------------------------------- embedders

def test_hash_embedder_is_deterministic_normalised_and_semantic():
    emb = HashEmbedder(256)
    a, b, c = emb.embed(["Dentist appointment on Friday", "when is my dentist appointment", "buy milk"])
    assert emb.embed(["Dentist appointment on Friday"])[0] == a and len(a) == 256
    assert abs(sum(x * x for x in a) - 1) < 1e-9
    dot = lambda u, v: sum(x * y for x, y in zip(u, v))  # noqa: E731
    assert dot(a, b) > 0.3 > dot(a, c)
    assert abs(sum(x * x for x in emb.embed([""])[0]) - 1) < 1e-9  # never a zero vector


def test_embedder_for_picks_by_model_and_provider(settings):
    def tenant(**over):
        return make_tenant(settings, "postgresql://x@127.0.0.1/db_emb", **over)

    assert isinstance(embedder_for(tenant(), env={}), HashEmbedder)
    openai_tenant = tenant(embedding_model="text-embedding-3-small",
                           llm={"provider": "openai", "api_key": "sk-tenant-secret"})
    emb = embedder_for(openai_tenant, env={})
    assert isinstance(emb, OpenAICompatEmbedder) and emb.provider == "openai" and emb.dim == 1536
    ollama = embedder_for(tenant(embedding_model="nomic-embed-text"), env={})
    assert ollama.provider == "ollama" and ollama.dim == 768

    deepseek = tenant(embedding_model="text-embedding-3-small", llm={"provider": "deepseek", "api_key": "sk-ds-key"})
    with pytest.raises(ConfigError, match="tenant mem:.*DeepSeek has no embeddings API") as err:
        embedder_for(deepseek, env={})
    assert "sk-ds-key" not in str(err.value)
    assert embedder_for(deepseek, env={"EMBEDDING_API_KEY": "sk-emb"}).provider == "openai"
    with pytest.raises(ConfigError, match="embedding.provider"):
        embedder_for(tenant(embedding={"provider": "cohere"}), env={})
    with pytest.raises(ConfigError, match="embedding.model"):
        embedder_for(tenant(embedding={"model": "x"}), env={})
    with pytest.raises(ConfigError, match="not an offline model"):
        embedder_for(tenant(embedding_model="local-minilm"), env={})


def test_openai_embedder_batches_over_http_and_checks_the_dimension(settings):
    from fake_openai import FakeOpenAI

    fake = FakeOpenAI(api_keys={"sk-emb-key"}, embedding_dim=256).start()
    try:
        block = {"provider": "openai", "base_url": fake.url, "api_key": "sk-emb-key"}
        ok = embedder_for(make_tenant(settings, "postgresql://x@127.0.0.1/db_emb", embedding_model="my-embedder",
                                      config={"timezone": "UTC", "embedding_dim": 256}, embedding=block), env={})
        vectors = ok.embed(["dentist", "milk", "bread"])
        assert len(vectors) == 3 and all(len(v) == 256 for v in vectors)
        assert [r["json"]["input"] for r in fake.requests] == [["dentist", "milk", "bread"]]  # one request

        wrong = embedder_for(make_tenant(settings, "postgresql://x@127.0.0.1/db_emb",
                                         embedding_model="text-embedding-3-small", embedding=block), env={})
        with pytest.raises(ConfigError, match="returned 256 dimensions.*stores 1536") as err:
            wrong.embed(["dentist"])
        assert "sk-emb-key" not in str(err.value)
    finally:
        fake.stop()
