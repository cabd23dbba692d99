"""Grounded answers (issue 13): the business's documents in, answers with their source out, "I don't know" for
what the documents do not say. Through the whole bot: the webhook, a real Celery worker, the tenant's Postgres
with pgvector and the offline wordllama-256 embedder, the mock brain (alpha) or a fake OpenAI model that reads
the passages it is given (gamma), and the fake Infobip.
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from documents import pdf
from helpers import AUTH, NUMBERS, inbound, new_user, wait_texts
from shared.knowledge.store import KnowledgeStore
from shared.conversation.prompt import KNOWLEDGE_HEADER, NO_KNOWLEDGE

PAGE_17_FACT = "Teeth whitening costs 240 euros per session and takes about one hour."
HANDBOOK_TITLE = "Patient handbook"


def handbook() -> bytes:
    """30 pages of an ordinary clinic handbook (about 250 words a page, prices of other treatments among them);
    the price of whitening is on page 17 only."""
    topics = [("check-ups", 60), ("fillings", 90), ("crowns", 650), ("children's visits", 0), ("x-rays", 35),
              ("hygiene visits", 75), ("root canal care", 480), ("braces", 2900), ("implants", 1800),
              ("dentures", 1200)]
    pages = []
    for n in range(1, 31):
        topic, price = topics[n % len(topics)]
        paragraph = (f"About {topic}: our dentists explain each step before they start, and you can ask questions "
                     f"at any time. Appointments for {topic} are booked at reception or by phone, and we send a "
                     f"reminder the day before. Please arrive ten minutes early and bring a list of your "
                     f"medicines.")
        pages.append("\n\n".join([f"Page {n}.", paragraph, f"The usual fee for {topic} is {price} euros.",
                                   paragraph.replace("About", "More about"), paragraph.replace("About", "Notes on")]))
    pages[16] = "\n\n".join(["Page 17.", "Cosmetic treatments.", PAGE_17_FACT,
                              "Results last one to three years, depending on what you eat and drink. Coffee, tea "
                              "and red wine stain teeth again over time; we offer a touch-up at half price.",
                              "Whitening is not suitable during pregnancy or for children under sixteen."])
    return pdf(pages, title=HANDBOOK_TITLE)


def markdown_folder(root: Path) -> Path:
    folder = root / f"kb-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / "hours.md").write_text("# Opening hours\n\nThe clinic is open Monday to Friday from 8:00 to 18:00. "
                                     "On Saturdays we open from 9:00 to 13:00.\n")
    (folder / "parking.md").write_text("# Parking\n\nPatients park for free in the garage under the clinic; take "
                                       "a ticket at the barrier and we validate it at reception.\n")
    (folder / "insurance.md").write_text("# Insurance\n\nWe bill most health insurers directly. Bring your "
                                         "insurance card to every visit.\n")
    return folder


@pytest.fixture
def documents(tenants, tmp_path):
    """Ingest the handbook and the folder into a tenant's knowledge; removed afterwards (the stack's tenants are
    shared by the whole session)."""
    added: list[tuple[str, list[str]]] = []

    def ingest(tenant_id: str) -> KnowledgeStore:
        tenant = tenants.require(tenant_id)
        store = KnowledgeStore(tenant)
        with psycopg.connect(tenant.db_dsn, row_factory=dict_row) as conn:
            results = [store.ingest(conn, "handbook.pdf", handbook(), "handbook.pdf"),
                       *store.ingest_path(conn, markdown_folder(tmp_path))]
        assert {r.status for r in results} == {"added"}, results
        added.append((tenant_id, [r.source for r in results]))
        return store

    yield ingest
    for tenant_id, sources in added:
        with psycopg.connect(tenants.require(tenant_id).db_dsn) as conn:
            for source in sources:
                KnowledgeStore(tenants.require(tenant_id)).remove(conn, source)


def ask(web: str, sandbox, tenant_id: str, user: str, text: str, answers_before: int = 0) -> str:
    body = inbound(NUMBERS[tenant_id], user, {"type": "TEXT", "text": text})
    assert requests.post(f"{web}/webhooks/infobip", json=body, headers=AUTH, timeout=5).status_code == 200
    return wait_texts(sandbox, user, answers_before + 1, what=f"the answer to {text!r}")[answers_before]


def usage_passages(db, tenant_id: str, user: str) -> list[list[int]]:
    with db(tenant_id) as conn:
        rows = conn.execute("SELECT u.knowledge_chunks FROM llm_usage u JOIN users s ON s.id = u.user_id "
                            "WHERE s.phone = %s ORDER BY u.id", (user,)).fetchall()
    return [r["knowledge_chunks"] for r in rows]


def page_17_chunks(db, tenant_id: str) -> set[int]:
    with db(tenant_id) as conn:
        rows = conn.execute("SELECT c.id FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id "
                            "WHERE d.source = 'handbook.pdf' AND c.page_start <= 17 AND c.page_end >= 17").fetchall()
    return {r["id"] for r in rows}


def test_the_mock_brain_answers_from_page_17_with_its_source_and_says_it_does_not_know_the_rest(
        web, worker, sandbox, db, documents):
    documents("alpha")
    user = new_user()
    answer = ask(web, sandbox, "alpha", user, "How much does teeth whitening cost?")
    assert "240 euros" in answer and f"{HANDBOOK_TITLE} (p. 17)" in answer, answer
    # the passages the answer was grounded on are on record, for the answering call (not the intent call)
    used = [ids for ids in usage_passages(db, "alpha", user) if ids]
    assert used and set(used[-1]) & page_17_chunks(db, "alpha")

    answer = ask(web, sandbox, "alpha", user, "Can I park my car at the clinic?", answers_before=1)
    assert "garage under the clinic" in answer and "Parking" in answer, answer

    answer = ask(web, sandbox, "alpha", user, "Which football team won the world cup in 1998?", answers_before=2)
    assert "don't know" in answer and "240" not in answer and "source" not in answer, answer


def test_a_model_reading_its_prompt_gets_the_passage_and_its_source_and_nothing_for_an_unrelated_question(
        web, worker, sandbox, fake_openai, db, documents):
    documents("gamma")

    def follows_the_passages(body: dict) -> dict:
        """A model that answers only from the passages its system prompt gives (or says it does not know)."""
        # the system prompt and the turn's context (passages, memories) after the history (issue 17)
        system = "\n".join(m["content"] for m in body["messages"] if m["role"] == "system")
        if system.startswith("Classify the user's message"):
            return {"content": "unknown"}
        found = re.search(r"^\[1\] source: (.+)\n(.+)$", system, re.M)
        if KNOWLEDGE_HEADER not in system or not found:
            return {"content": "I don't know, sorry."}
        fact = next((s for s in re.split(r"(?<=\.)\s+", found.group(2)) if "euros" in s), found.group(2))
        return {"content": f"{fact} (source: {found.group(1)})"}

    fake_openai.reset()
    fake_openai.script(*[{"respond": follows_the_passages}] * 4)
    user = new_user()
    answer = ask(web, sandbox, "gamma", user, "What is the price of teeth whitening?")
    assert answer == f"{PAGE_17_FACT} (source: {HANDBOOK_TITLE} (p. 17))"
    chat = [r["json"] for r in fake_openai.requests if r["path"] == "/v1/chat/completions"
            and not r["json"]["messages"][0]["content"].startswith("Classify")]
    system = "\n".join(m["content"] for m in chat[-1]["messages"] if m["role"] == "system")
    assert PAGE_17_FACT in system and f"source: {HANDBOOK_TITLE} (p. 17)" in system
    # business knowledge and the user's memory are separate sections; the knowledge search tool is offered
    assert "search_knowledge" in [t["function"]["name"] for t in chat[-1].get("tools") or []]

    fake_openai.reset()
    fake_openai.script(*[{"respond": follows_the_passages}] * 4)
    answer = ask(web, sandbox, "gamma", user, "Who won the football world cup in 1998?", answers_before=1)
    assert answer == "I don't know, sorry."
    system = [r["json"] for r in fake_openai.requests if r["path"] == "/v1/chat/completions"][-1]["messages"][-2]
    assert NO_KNOWLEDGE in system["content"] and PAGE_17_FACT not in system["content"]  # the turn's context


def test_without_documents_nothing_changes(web, worker, sandbox, fake_openai):
    """A tenant with no documents: no knowledge section, no "I don't know" line, no knowledge tool offered."""
    fake_openai.reset()
    user = new_user()
    ask(web, sandbox, "gamma", user, "What is the price of teeth whitening?")
    chat = [r["json"] for r in fake_openai.requests if r["path"] == "/v1/chat/completions"
            and not r["json"]["messages"][0]["content"].startswith("Classify")]
    system = "\n".join(m["content"] for m in chat[-1]["messages"] if m["role"] == "system")
    assert KNOWLEDGE_HEADER not in system and NO_KNOWLEDGE not in system
    assert "search_knowledge" not in [t["function"]["name"] for t in chat[-1].get("tools") or []]
