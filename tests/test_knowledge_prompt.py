"""Grounding (issue 13): which passages reach the prompt, how they are cited, when the bot is told to say it does
not know, and the `search_knowledge` tool. The stores run on real PostgreSQL (with pgvector and the offline
wordllama-256 embedder, and in sql_fallback mode); the end-to-end answers are in test_knowledge_answers.py.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

import factories
from helpers import OFFLINE_ENV
from shared.config.settings import load_settings
from shared.config.tenants import parse_tenants
from shared.conversation.engine import respond
from shared.conversation.prompt import KNOWLEDGE_HEADER, MEMORY_HEADER, NO_KNOWLEDGE, Knowledge, build_prompt
from shared.db.migrate import migrate_tenant
from shared.errors import ConfigError
from shared.knowledge.store import KnowledgeStore, coverage
from shared.llm.mock import MockProvider
from shared.memory.store import MemoryStore
from shared.tools.base import ToolContext
from shared.tools.knowledge_tools import NOTHING_FOUND
from shared.tools.registry import build_registry

from test_knowledge_store import DOCS
from conftest import fresh_dsn
from test_memory import make_tenant

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
SETTINGS = load_settings(OFFLINE_ENV)
WHITENING = "How much does teeth whitening cost?"
UNRELATED = "Who won the football world cup in 1998?"


def tenant(**config):
    return parse_tenants({"tenants": [{"tenant_id": "shop", "waba_number": "+1 555 0100",
                                       "db_dsn": "postgresql://u@db.example/shop", "config": config}]},
                         SETTINGS, {}).require("shop")


# ---------------------------------------------------------------- the prompt

def test_passages_and_memories_are_separate_sections_with_sources():
    knowledge = Knowledge((("Price list › Whitening (p. 2)", "Whitening costs 250 EUR per session."),), True)
    prompt = build_prompt(tenant(), NOW, [], WHITENING, memories=["Prefers mornings"], knowledge=knowledge)
    system = prompt.messages[-2]["content"]  # the turn's context, after the history (issue 17: cacheable prefix)
    assert system.index(KNOWLEDGE_HEADER) < system.index(MEMORY_HEADER)
    assert "[1] source: Price list › Whitening (p. 2)\nWhitening costs 250 EUR per session." in system
    assert NO_KNOWLEDGE not in system and "- Prefers mornings" in system.split(MEMORY_HEADER)[1]
    assert (prompt.passages_used, prompt.memories_used) == (1, 1)


def test_searched_without_a_relevant_passage_says_do_not_guess_and_unsearched_says_nothing():
    searched = build_prompt(tenant(), NOW, [], UNRELATED, knowledge=Knowledge((), True)).messages[-2]["content"]
    assert NO_KNOWLEDGE in searched and KNOWLEDGE_HEADER not in searched
    plain = build_prompt(tenant(), NOW, [], UNRELATED).messages[-2]["content"]
    assert NO_KNOWLEDGE not in plain and KNOWLEDGE_HEADER not in plain


def test_passages_stay_whole_or_stay_out_in_a_small_budget():
    """A passage cut in the middle can lose the fact: the best one is kept (clipped only when even it alone is too
    long), the others whole while they fit a third of the budget."""
    fact = "Whitening costs 250 EUR per session. "
    passages = tuple((f"Doc {i}", (fact if i == 0 else f"Other passage {i}. ") + "More words here. " * 25)
                     for i in range(4))
    prompt = build_prompt(tenant(max_context_tokens=600), NOW, [], WHITENING, knowledge=Knowledge(passages, True))
    system = prompt.messages[-2]["content"]
    assert 1 <= prompt.passages_used < 4 and fact.strip() in system and "shortened" not in system
    assert all(p[1] in system for p in passages[:prompt.passages_used])
    tiny = build_prompt(tenant(max_context_tokens=200), NOW, [], WHITENING, knowledge=Knowledge(passages, True))
    assert tiny.passages_used == 1 and "shortened" in tiny.messages[-2]["content"]


def test_knowledge_settings_are_validated_with_their_names():
    assert (tenant().config.knowledge_passages, tenant().config.knowledge_min_similarity) == (4, 0.35)
    with pytest.raises(ConfigError) as err:
        tenant(knowledge_min_similarity=1.5, knowledge_min_coverage="half", knowledge_passages=50)
    for key in ("knowledge_min_similarity", "knowledge_min_coverage", "knowledge_passages"):
        assert key in str(err.value)
    assert "must be a number between 0 and 1" in str(err.value)


def test_coverage_counts_the_question_words_a_passage_holds_as_prefixes():
    assert coverage("opening hours on Saturday?", "We open Saturdays; opening hours 9-14.") == 1.0
    assert coverage("opening hours on Sunday?", "We open Saturdays; opening hours 9-14.") == pytest.approx(2 / 3)
    assert coverage("the of and", "nothing") == 0.0 and coverage("", "text") == 0.0


# ---------------------------------------------------------------- relevance on real stores

@pytest.fixture(scope="module", params=["pgvector", "sql_fallback"])
def grounded(request, settings, pg_url, tmp_path_factory):
    """A tenant with the clinic documents, its model wordllama-256 (the offline default): (tenant, store)."""
    shop = make_tenant(settings, fresh_dsn(pg_url, "ground"), request.param, embedding_model="wordllama-256")
    migrate_tenant(shop)
    folder = tmp_path_factory.mktemp("ground")
    for name, text in DOCS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    store = KnowledgeStore(shop)
    with psycopg.connect(shop.db_dsn) as conn:
        store.ingest_path(conn, folder, tags=["clinic"])
    return shop, store


def relevant(shop, store, question: str):
    cfg = shop.config
    with psycopg.connect(shop.db_dsn, row_factory=dict_row) as conn:
        return store.search(conn, question, limit=8).relevant(cfg.knowledge_min_similarity,
                                                               cfg.knowledge_min_coverage)


@pytest.mark.parametrize("question, expected", [
    (WHITENING, "Whitening costs 250 EUR"),
    ("Where can I park?", "Mill Lane"),
    ("Are you open on Saturday?", "Saturday from 10:00"),
])
def test_an_answerable_question_has_its_passage_above_the_cut(grounded, question, expected):
    hits = relevant(*grounded, question)
    assert hits and any(expected in h.text for h in hits[:2]), [h.text[:60] for h in hits]


@pytest.mark.parametrize("question", [UNRELATED, "What is the capital of Australia?",
                                      "Can you recommend a good pizza recipe?"])
def test_an_unrelated_question_has_nothing_above_the_cut(grounded, question):
    assert relevant(*grounded, question) == []


def test_search_knowledge_tool_returns_cited_passages_or_says_nothing_answers(grounded):
    shop, store = grounded
    registry = build_registry(shop)
    with psycopg.connect(shop.db_dsn, row_factory=dict_row) as conn:
        ctx = ToolContext(tenant=shop, conn=conn, user_id=0, user_phone="", memory=None,
                          clock=lambda: NOW, knowledge=store)
        found = registry.call(ctx, "search_knowledge", json.dumps({"query": "whitening price", "limit": 2}))
        data = json.loads(found.content)
        assert not found.is_error and data["count"] >= 1
        assert data["passages"][0]["source"] == "Prices › Whitening" and "250 EUR" in data["passages"][0]["text"]
        nothing = json.loads(registry.call(ctx, "search_knowledge", json.dumps({"query": UNRELATED})).content)
        assert nothing == {"count": 0, "passages": [], "note": NOTHING_FOUND}
        other_tag = json.loads(registry.call(ctx, "search_knowledge",
                                             json.dumps({"query": "whitening price", "tag": "shop"})).content)
        assert other_tag["count"] == 0
        bad = registry.call(ctx, "search_knowledge", json.dumps({"query": "x", "limit": 99}))
        assert bad.is_error and "limit" in bad.content


# ---------------------------------------------------------------- the engine

def engine_turn(shop, store, text: str):
    """One engine turn on the mock brain, in a transaction rolled back afterwards."""
    with psycopg.connect(shop.db_dsn, row_factory=dict_row) as conn:
        try:
            return respond(tenant=shop, conn=conn, llm=MockProvider(), registry=build_registry(shop),
                           memory=MemoryStore(shop), user_id=factories.user(conn)["id"], phone="15550100",
                           text=text, history=[], now=NOW, clock=lambda: NOW, request_id=None, knowledge=store)
        finally:
            conn.rollback()


def test_the_engine_grounds_the_answer_and_names_the_passages(grounded):
    shop, store = grounded
    reply = engine_turn(shop, store, WHITENING)
    assert "250 EUR" in reply.text and "(source: Prices › Whitening)" in reply.text
    assert reply.passages[0]["citation"] == "Prices › Whitening" and reply.passages[0]["chunk_id"]
    assert all(c.passages == tuple(p["chunk_id"] for p in reply.passages) for c in reply.calls
               if c.purpose != "intent")
    assert "search_knowledge" in reply.response.tools_offered


def test_no_passages_per_prompt_still_offers_the_search_tool(grounded):
    shop, store = grounded
    quiet = dataclasses.replace(shop, config=dataclasses.replace(shop.config, knowledge_passages=0))
    reply = engine_turn(quiet, store, WHITENING)
    assert reply.passages == [] and "search_knowledge" in reply.response.tools_offered
    assert "don't know" not in reply.text  # not searched: the prompt does not claim the documents are silent
