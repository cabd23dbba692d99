"""Embeddings against real OpenAI-compatible servers (issue 10): per-token answers (llama.cpp's server) are
mean-pooled, the embedder is probed at start-up and in `wabot check`, and any embedder failure leaves memory
working on full-text search, in the store, in the memory tools and in a whole turn through a real worker.

Everything runs on real parts: the `openai` SDK over HTTP to tests/fake_openai.py (per-token mode speaks
llama-cpp-python's wire format), the session's PostgreSQL with pgvector, a Redis and a Celery worker of its own.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from conftest import fresh_dsn, start_worker
from devtools import cli
from devtools.devstack import start_redis
from fake_openai import FakeOpenAI, llama_tokens, token_vector
from helpers import AUTH, OFFLINE_ENV, inbound, new_user, wait_for
from ingress.app import create_app
from shared.config.settings import load_settings
from shared.config.tenants import load_tenants, parse_tenants
from shared.db.migrate import migrate_tenant
from shared.errors import ConfigError
from shared.llm.base import LLMError
from shared.memory.embedders import DimensionMismatch, embedder_for, one_vector
from shared.memory.probe import probe_all, probe_embedder
from shared.memory.store import MemoryStore, NewItem
from shared.queueing.tasks import TASK_BACKFILL_EMBEDDINGS, enqueue, make_celery
from shared.tools.base import ToolContext
from shared.tools.memory_tools import MEMORY_TOOLS

import factories

EMBED_KEY = "sk-embed-SECRET-0123456789abcdef"
LLAMA_DIM = 640  # gemma 3 270M's hidden size: what llama.cpp's server answers per token
TOOLS = {t.name: t for t in MEMORY_TOOLS}


def tenant_doc(dsn: str, url: str, dim: int, **over) -> dict:
    doc = {"tenant_id": "emb", "waba_number": "+1 555 0177", "db_dsn": dsn, "embedding_model": "gemma-3-270m",
           "vector_store": "pgvector",
           "embedding": {"provider": "openai", "base_url": url, "api_key": EMBED_KEY},
           "config": {"business_name": "Emb", "timezone": "UTC", "embedding_dim": dim}}
    doc.update(over)
    return doc


def make_tenant(settings, dsn: str, url: str, dim: int, **over):
    return parse_tenants({"tenants": [tenant_doc(dsn, url, dim, **over)]}, settings, {}).require("emb")


@pytest.fixture(scope="module")
def llama_fake():
    server = FakeOpenAI(embedding_dim=LLAMA_DIM, embedding_mode="per_token").start()
    yield server
    server.stop()


@pytest.fixture
def llama(llama_fake):
    llama_fake.reset()
    llama_fake.embeddings_status = None
    yield llama_fake
    llama_fake.embeddings_status = None


@pytest.fixture(scope="module")
def llama_db(pg_url):
    return fresh_dsn(pg_url, "embhealth")


@pytest.fixture
def conn_of():
    opened = []

    def connect(tenant):
        migrate_tenant(tenant)
        c = psycopg.connect(tenant.db_dsn, row_factory=dict_row)
        opened.append(c)
        return c
    yield connect
    for c in opened:
        c.rollback()
        c.close()


def pooled(text: str, dim: int) -> list[float]:
    tokens = [token_vector(t, dim) for t in llama_tokens(text)]
    mean = [sum(col) / len(tokens) for col in zip(*tokens)]
    norm = math.sqrt(sum(v * v for v in mean))
    return [v / norm for v in mean]


# ---------------------------------------------------------------- per-token answers are pooled

def test_the_fake_answers_per_token_like_llama_cpp(llama):
    """The wire format the pooling is written against: one list of token vectors per input, BOS included."""
    resp = requests.post(f"{llama.url}/embeddings", json={"model": "m", "input": ["buy milk", "dentist"],
                                                           "encoding_format": "base64"}, timeout=5)
    body = resp.json()
    assert resp.status_code == 200 and body["object"] == "list" and body["usage"]["prompt_tokens"] == 5
    first = body["data"][0]
    assert list(first) == ["object", "embedding", "index"] and first["index"] == 0
    assert len(first["embedding"]) == 3 and all(len(t) == LLAMA_DIM for t in first["embedding"])
    assert body["data"][1]["embedding"] != [token_vector(t, LLAMA_DIM) for t in llama_tokens("dentist")]  # its bug


def test_per_token_vectors_are_mean_pooled_normalised_and_searchable(settings, llama, llama_db, conn_of):
    tenant = make_tenant(settings, llama_db, llama.url, LLAMA_DIM)
    store = MemoryStore(tenant)  # the real embedder of the tenant: the SDK over HTTP
    conn = conn_of(tenant)
    uid = factories.user(conn)["id"]
    ids = store.add(conn, uid, [NewItem("note", "Dentist appointment", "with Dr Who"),
                                NewItem("note", "Buy milk", "and bread")])
    texts = ["Dentist appointment\nwith Dr Who", "Buy milk\nand bread"]
    for item_id, text in zip(ids, texts):
        row = conn.execute("SELECT embedding::text AS e FROM memory_chunks WHERE id = %s", (item_id,)).fetchone()
        stored, expected = json.loads(row["e"]), pooled(text, LLAMA_DIM)
        assert len(stored) == LLAMA_DIM and max(abs(a - b) for a, b in zip(stored, expected)) < 1e-6
        assert abs(sum(v * v for v in stored) - 1) < 1e-5
    hits = store.search(conn, uid, "when is my dentist appointment?")
    assert hits and hits[0].id == ids[0]
    assert store.mode(conn) == "pgvector"
    # the batch's per-token answer showed the server; its wrong vectors were not kept, and from then on every
    # text goes alone (the search's query too)
    embed_calls = [r["json"]["input"] for r in llama.requests if r["path"] == "/v1/embeddings"]
    assert embed_calls == [texts, texts[:1], texts[1:], ["when is my dentist appointment?"]]
    assert store.embedder.one_text_per_request


@pytest.mark.parametrize("raw,problem", [
    ([[1.0, 2.0], [3.0]], "per-token vectors of different sizes (1, 2)"),
    ([], "an embedding that is empty"),
    ([[]], "per-token vectors, but token 0 is empty"),
    ([[1.0, "x"]], "token 0 holds a str, not only numbers"),
    ("AAAA", "an embedding that is a str, not a list of numbers"),
    ([[0.0, 0.0], [0.0, 0.0]], "whose mean is a zero vector"),
    ([1.0, None], "holds a NoneType"),
])
def test_unusable_answers_are_named(raw, problem):
    with pytest.raises(LLMError) as err:
        one_vector(raw, "openai embedding model 'm'")
    assert problem in str(err.value) and "openai embedding model 'm' answered" in str(err.value)


def test_a_pooled_dimension_that_does_not_fit_the_column_names_both(settings, llama):
    embedder = embedder_for(make_tenant(settings, "postgresql://x@127.0.0.1/db_x", llama.url, 768), env={})
    with pytest.raises(DimensionMismatch) as err:
        embedder.embed(["dentist"])
    text = str(err.value)
    assert "returned 640 dimensions" in text and "vector(768)" in text and "embedding_dim: 640" in text
    assert isinstance(err.value, ConfigError) and EMBED_KEY not in text


# ---------------------------------------------------------------- the probe and `wabot check`

def test_probe_reports_dimension_and_latency_or_the_problem(settings, llama):
    ok = probe_embedder(make_tenant(settings, "postgresql://x@127.0.0.1/db_x", llama.url, LLAMA_DIM))
    assert ok.ok and ok.dim == LLAMA_DIM and ok.latency_ms >= 0 and ok.problem is None
    wrong = probe_embedder(make_tenant(settings, "postgresql://x@127.0.0.1/db_x", llama.url, 768))
    assert not wrong.ok and wrong.dim == 640 and "640 dimensions" in wrong.problem and "vector(768)" in wrong.problem
    llama.embeddings_status = 404
    down = probe_embedder(make_tenant(settings, "postgresql://x@127.0.0.1/db_x", llama.url, LLAMA_DIM))
    assert not down.ok and down.dim is None and "HTTP 404" in down.problem and EMBED_KEY not in down.problem
    fallback = make_tenant(settings, "postgresql://x@127.0.0.1/db_x", llama.url, LLAMA_DIM,
                           vector_store="sql_fallback")
    assert probe_all([fallback]) == []  # sql_fallback tenants never embed


@pytest.fixture
def check_env(tmp_path, monkeypatch):
    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)

    def write(url: str, dim: int) -> str:
        path = tmp_path / "tenants.yaml"
        path.write_text(f"""tenants:
  - tenant_id: emb
    waba_number: "+1 555 0177"
    embedding_model: gemma-3-270m
    embedding: {{provider: openai, base_url: "{url}", api_key: "{EMBED_KEY}"}}
    config: {{timezone: UTC, embedding_dim: {dim}}}
  - tenant_id: plain
    waba_number: "+1 555 0178"
    vector_store: sql_fallback
""")
        monkeypatch.setenv("TENANTS_FILE", str(path))
        return str(path)
    return write


def test_wabot_check_prints_the_probe(check_env, llama, capsys):
    check_env(llama.url, LLAMA_DIM)
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "emb: embeddings gemma-3-270m: dim=640 latency=" in out and "ok: 2 tenant(s)" in out
    assert "plain: embeddings" not in out  # sql_fallback: not probed


def test_wabot_check_names_a_wrong_dimension_and_no_probe_skips_it(check_env, llama, capsys):
    path = check_env(llama.url, 768)
    assert cli.main(["check"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4: tenant emb: embedding probe failed: embedding model 'gemma-3-270m' returned 640 " \
           f"dimensions, but the tenant database stores 768" in err
    assert "set config.embedding_dim: 640" in err and EMBED_KEY not in err
    assert cli.main(["check", "--no-probe"]) == 0
    assert "ok: 2 tenant(s)" in capsys.readouterr().out
    assert not [r for r in llama.requests if r["path"] == "/v1/embeddings"][1:]  # --no-probe: no call


def test_wabot_check_names_a_failing_embedder(check_env, llama, capsys):
    check_env(llama.url, LLAMA_DIM)
    llama.embeddings_status = 404
    assert cli.main(["check"]) == 2
    err = capsys.readouterr().err
    assert "tenant emb: embedding probe failed: openai embeddings answered HTTP 404" in err
    assert EMBED_KEY not in err


# ---------------------------------------------------------------- failures: memory still answers

def _ctx(tenant, conn, store, uid):
    return ToolContext(tenant=tenant, conn=conn, user_id=uid, user_phone="1555", memory=store,
                       clock=lambda: datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc))


@pytest.mark.parametrize("failure", ["http_404", "wrong_dimension", "unreachable"])
def test_memory_tools_say_semantic_search_is_unavailable(settings, llama, llama_db, conn_of, failure):
    good = make_tenant(settings, llama_db, llama.url, LLAMA_DIM)
    conn = conn_of(good)
    uid = factories.user(conn)["id"]
    if failure == "http_404":
        why = "openai embeddings answered HTTP 404"
        llama.embeddings_status = 404
    elif failure == "wrong_dimension":  # the server now answers 320-dimension tokens; the column is vector(640)
        why = "returned 320 dimensions, but the tenant database stores 640"
        llama.embedding_dim = 320
    else:  # nothing listens there
        why = "openai embeddings unreachable: APIConnectionError"
    store = MemoryStore(good if failure != "unreachable" else make_tenant(settings, llama_db, "http://127.0.0.1:9/v1",
                                                                          LLAMA_DIM))
    try:
        saved = TOOLS["upsert_item"].invoke(_ctx(good, conn, store, uid), {"kind": "note", "title": "Locker code 4512"})
        assert saved["created"] and "without its semantic-search embedding" in saved["note"] and why in saved["note"]
        row = conn.execute("SELECT embedding IS NULL AS unembedded FROM memory_chunks WHERE id = %s",
                           (saved["id"],)).fetchone()
        assert row["unembedded"]  # backfill_embeddings fills it once the embedder is back
        found = TOOLS["search_memory"].invoke(_ctx(good, conn, store, uid), {"query": "locker code"})
        assert [r["id"] for r in found["results"]] == [saved["id"]]
        assert "Semantic search is unavailable" in found["note"] and why in found["note"]
        assert EMBED_KEY not in json.dumps([saved, found])
        assert [h.id for h in store.relevant_for_prompt(conn, uid, "what is my locker code?")] == [saved["id"]]
    finally:
        llama.embedding_dim = LLAMA_DIM
        llama.embeddings_status = None
    store = MemoryStore(good)  # the embedder is back
    assert store.backfill_embeddings(conn) == 1
    assert store.search(conn, uid, "locker code")[0].id == saved["id"]


def test_an_unbuildable_embedder_falls_back_too(settings, llama, llama_db, conn_of):
    """A tenant whose embedder cannot even be built (no key for OpenAI) still stores and searches, full-text."""
    conn = conn_of(make_tenant(settings, llama_db, llama.url, LLAMA_DIM))  # the database, migrated
    keyless = make_tenant(settings, llama_db, llama.url, LLAMA_DIM, embedding_model="text-embedding-3-small",
                          embedding={}, config={"timezone": "UTC"})
    uid = factories.user(conn)["id"]
    store = MemoryStore(keyless)
    [item_id], why = store.add_or_defer(conn, uid, [NewItem("note", "Bike tyre pressure", "4 bar")])
    assert "needs an OpenAI API key" in why
    outcome = store.search_or_fulltext(conn, uid, "tyre pressure")
    assert outcome.mode == "sql" and [h.id for h in outcome.hits] == [item_id]
    assert "needs an OpenAI API key" in outcome.semantic_unavailable


# ---------------------------------------------------------------- a whole turn with the embedder failing

def _stack(stack_env, data_dir, llama, pg_url, number: str, dim: int):
    """A worker of its own (its own Redis, so it never takes the session's tasks) for one tenant whose chat model
    and embeddings are `llama` (640 dimensions per token), its column `vector(dim)`."""
    redis = start_redis(Path(data_dir) / f"embed-redis-{new_user()}")
    tenants_file = Path(data_dir) / f"embed-tenants-{new_user()}.yaml"
    tenants_file.write_text(f"""tenants:
  - tenant_id: emb
    waba_number: "+{number}"
    db_dsn: "{fresh_dsn(pg_url, 'embturn')}"
    embedding_model: gemma-3-270m
    embedding: {{provider: openai, base_url: "{llama.url}", api_key: "{EMBED_KEY}"}}
    llm: {{provider: openai, model_chat: gpt-4o-mini, base_url: "{llama.url}", api_key: "{EMBED_KEY}"}}
    enabled_agents: [orchestrator, db_agent]
    config: {{business_name: Emb Gym, timezone: UTC, rag_enabled: true, debounce_ms: 100, embedding_dim: {dim}}}
""")
    env = {**stack_env, "REDIS_URL": redis.url, "TENANTS_FILE": str(tenants_file)}
    settings = load_settings(env, dotenv=False)
    tenants = load_tenants(settings, env=env)
    for t in tenants:
        migrate_tenant(t)
    worker = start_worker(env, Path(data_dir) / f"embed-worker-{new_user()}.log", name="embhealth")
    try:
        yield settings, tenants, worker, number
    finally:
        worker.stop()
        redis.stop()


@pytest.fixture
def own_stack(stack_env, data_dir, llama, pg_url):
    """A model configured with 768 dimensions on a server answering 640 per token: a lasting mismatch."""
    yield from _stack(stack_env, data_dir, llama, pg_url, "447000000177", 768)


@pytest.fixture
def fitting_stack(stack_env, data_dir, llama, pg_url):
    """The column fits the model (640): the embedder fails only while the test makes the server fail."""
    yield from _stack(stack_env, data_dir, llama, pg_url, "447000000178", LLAMA_DIM)


def _conversation(settings, tenants, number: str, sandbox):
    client = create_app(settings, tenants, configure_logs=False).test_client()
    user = new_user()

    def replies() -> list[str]:
        return [r["json"]["content"]["text"] for r in sandbox.requests(path="/whatsapp/1/message/text")
                if r["json"]["to"] == user]

    def converse(text: str) -> str:
        before = len(replies())
        assert client.post("/webhooks/infobip", json=inbound(number, user, {"type": "TEXT", "text": text}),
                           headers=AUTH).status_code == 200
        return wait_for(lambda: replies()[before:], timeout=30, what=f"reply to {text!r}")[-1]

    return user, converse


def test_memory_saved_while_the_embedder_failed_is_embedded_by_the_backfill_beat(fitting_stack, llama, sandbox):
    settings, tenants, _worker, number = fitting_stack
    user, converse = _conversation(settings, tenants, number, sandbox)
    llama.embeddings_status = 503
    assert converse("Remember that my locker code is 4512") == "I've saved your note: locker code is 4512."
    dsn = tenants.require("emb").db_dsn

    def unembedded() -> bool:
        with psycopg.connect(dsn, row_factory=dict_row) as conn:
            return conn.execute("SELECT m.embedding IS NULL AS missing FROM memory_chunks m JOIN users u "
                                "ON u.id = m.user_id WHERE u.phone = %s", (user,)).fetchone()["missing"]

    assert unembedded()
    llama.embeddings_status = None  # the embedding service is back; the beat's task fills the vector in
    enqueue(make_celery(settings), TASK_BACKFILL_EMBEDDINGS, {})
    wait_for(lambda: not unembedded(), 30, what="the backfilled embedding")


def test_a_turn_answers_from_full_text_memory_when_the_embedder_fails(own_stack, llama, sandbox):
    settings, tenants, worker, number = own_stack
    log = worker.log()
    assert "embedding probe failed for tenant emb" in log and "returned 640 dimensions" in log
    assert "vector(768)" in log and EMBED_KEY not in log and worker.popen.poll() is None
    user, converse = _conversation(settings, tenants, number, sandbox)

    assert converse("Remember that my locker code is 4512") == "I've saved your note: locker code is 4512."
    with psycopg.connect(tenants.require("emb").db_dsn, row_factory=dict_row) as conn:
        row = conn.execute("SELECT m.embedding IS NULL AS unembedded FROM memory_chunks m JOIN users u "
                           "ON u.id = m.user_id WHERE u.phone = %s", (user,)).fetchone()
    assert row["unembedded"]
    reply = converse("What do you know about my locker code?")
    assert reply == "Here is what I found: Locker code is 4512"
    chat = [r["json"] for r in llama.requests if r["path"] == "/v1/chat/completions"
            and "locker code" in json.dumps(r["json"]["messages"])]
    last = chat[-1]["messages"]
    # relevant_for_prompt fell back to full-text memory (the turn's context, a system message after the history)
    assert any("Locker code is 4512" in m["content"] for m in last if m["role"] == "system")
    # the memory search ran (prefetched by the engine: its result is in the turn's context; or called by the
    # model: a tool message) and said why it searched by text
    tool_results = [m["content"] for r in chat for m in r["messages"] if m.get("role") in ("tool", "system")]
    assert any("Semantic search is unavailable" in t for t in tool_results)
    assert not any("internal error" in t for t in tool_results)
    assert EMBED_KEY not in worker.log()
