"""Rolling summaries (issue 17): older history is folded into a short per-user summary by a task on its own queue,
incrementally, within its bound, at most once per message range, and erased with the user; a fact said early and
never saved is still answered much later (the OpenAI provider against the local fake server, a scripted model)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

import factories
from helpers import new_user, wait_for
from shared.conversation import summaries
from shared.conversation.prompt import SUMMARY_HEADER
from shared.conversation.tokens import estimate_text
from shared.db import summaries as summaries_db
from shared.llm.base import ChatResult, Usage
from shared.privacy.requests import forget_user
from shared.queueing.tasks import QUEUE_SUMMARIES, TASK_QUEUES, TASK_UPDATE_SUMMARY
from test_engine import chat_requests, converse

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
FACT = "By the way, my sister Clara lives in Lisbon and works as a nurse"
FILLER = "we talked about the weekly plan, the gym schedule and other long details of the day " * 2


class ScriptedSummariser:
    """A model that answers each summary call with the previous summary plus one line per folded user message."""

    name, model, entry = "scripted", "scripted-1", "scripted"

    def __init__(self, line_words: int = 12):
        self.calls: list[list[dict]] = []
        self.line_words = line_words

    def chat(self, messages, **_):
        self.calls.append(messages)
        body = messages[-1]["content"]
        previous, _, new = body.partition("\n\nNew messages:\n")
        lines = [x for x in previous.splitlines() if x.startswith("- ")]
        lines += ["- " + " ".join(x[len("User: "):].split()[:self.line_words])
                  for x in new.splitlines() if x.startswith("User: ")]
        return ChatResult(content="\n".join(lines), usage=Usage(100, 20), model=self.model)


class BareUow:
    """A unit of work on one autocommit connection (what update_summary needs of it)."""

    def __init__(self, conn):
        self.conn = conn

    def transaction(self, tenant):
        return _Tx(self.conn)


class _Tx:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self._tx = self.conn.transaction()
        self._tx.__enter__()
        return self

    def __exit__(self, *exc):
        return self._tx.__exit__(*exc)


def _history(conn, uid: int, n: int, first: str | None = None) -> None:
    if first:
        factories.message(conn, uid, body=first)
        factories.message(conn, uid, role="assistant", body="Noted.")
    factories.messages(conn, uid, n, role=lambda i: "user" if i % 2 == 0 else "assistant",
                       body=lambda i: f"message {i}: {FILLER}")


def _rows(conn, uid: int) -> list[dict]:
    return conn.execute("SELECT id, role, body FROM messages WHERE user_id = %s ORDER BY id", (uid,)).fetchall()


def test_the_summary_task_has_its_own_queue():
    assert TASK_QUEUES[TASK_UPDATE_SUMMARY] == QUEUE_SUMMARIES == "summaries"


def test_a_turn_asks_once_when_history_outgrows_its_budget(db, tenants):
    tenant = tenants.require("alpha")
    with db("alpha") as conn:
        uid = factories.user(conn)["id"]
        _history(conn, uid, 6)
        published: list = []
        publish = lambda task, payload: published.append((task, payload))  # noqa: E731
        assert not summaries.request_if_due(conn, tenant, uid, _rows(conn, uid), NOW, publish)  # fits: nothing
        _history(conn, uid, 60)
        assert summaries.request_if_due(conn, tenant, uid, _rows(conn, uid), NOW, publish)
        assert not summaries.request_if_due(conn, tenant, uid, _rows(conn, uid), NOW, publish)  # pending: once
        assert published == [(TASK_UPDATE_SUMMARY, {"tenant_id": "alpha", "user_id": uid})]


def test_the_update_folds_old_messages_once_within_its_bound(db, tenants):
    tenant = tenants.require("alpha")
    model = ScriptedSummariser()
    with db("alpha") as conn:
        uid = factories.user(conn)["id"]
        _history(conn, uid, 80, first=FACT)
        summaries.request_if_due(conn, tenant, uid, _rows(conn, uid), NOW, lambda *a: None)
        assert summaries.update_summary(tenant, BareUow(conn), lambda t, c: model, uid, NOW) == "updated"
        first = summaries_db.get(conn, uid)
        assert first["covers_to"] > 0 and first["updates"] == 1 and first["requested_at"] is None
        assert "sister Clara lives in Lisbon" in first["summary"]
        assert estimate_text(first["summary"]) <= tenant.config.summary_max_tokens
        left = [r for r in _rows(conn, uid) if r["id"] > first["covers_to"]]
        assert left and left[0]["role"] == "user", "the window after the summary starts at a user message"
        assert summaries._cost(left, 750) <= tenant.config.history_budget_tokens // 2
        # a redelivered task: nothing new to fold, no model call, nothing written
        calls = len(model.calls)
        assert summaries.update_summary(tenant, BareUow(conn), lambda t, c: model, uid, NOW) == "nothing to fold"
        assert len(model.calls) == calls and summaries_db.get(conn, uid)["updates"] == 1
        # more conversation: the next update starts from the summary it has (incremental), and stays bounded
        _history(conn, uid, 200)
        while summaries.update_summary(tenant, BareUow(conn), lambda t, c: model, uid, NOW) == "updated":
            pass
        last = summaries_db.get(conn, uid)
        assert last["updates"] > 2 and "Summary so far:\n- " in model.calls[-1][-1]["content"]
        assert estimate_text(last["summary"]) <= tenant.config.summary_max_tokens
        # a copy that read an older covers_to loses the race and writes nothing
        assert not summaries_db.advance(conn, uid, read_covers_to=first["covers_to"], summary="stale",
                                        covers_to=last["covers_to"] + 1, now=NOW)


def test_the_summary_is_erased_with_the_user_and_a_late_update_writes_nothing(db, tenants):
    tenant = tenants.require("alpha")
    with db("alpha") as conn:
        uid = factories.user(conn)["id"]
        _history(conn, uid, 80, first=FACT)
        summaries.request_if_due(conn, tenant, uid, _rows(conn, uid), NOW, lambda *a: None)
        summaries.update_summary(tenant, BareUow(conn), lambda t, c: ScriptedSummariser(), uid, NOW)
        row = summaries_db.get(conn, uid)
        assert "Lisbon" in row["summary"]
        with conn.transaction():
            deleted = forget_user(conn, uid, actor="test", now=NOW)
        assert deleted["conversation_summaries"] == 1
        assert summaries_db.get(conn, uid) is None
        # a task that read before the erasure and writes after it: no row to move, nothing recreated
        assert not summaries_db.advance(conn, uid, read_covers_to=row["covers_to"], summary="- Lisbon",
                                        covers_to=row["covers_to"] + 10, now=NOW)
        assert summaries.update_summary(tenant, BareUow(conn), lambda t, c: ScriptedSummariser(), uid, NOW) \
            == "no summary requested"


def _answer_from_summary(body: dict) -> dict:
    """The scripted model of the recall check: the intent classifier says small talk; the answer names where the
    sister lives only if the prompt's summary says it (history and memories do not hold it any more)."""
    system = "\n".join(m.get("content") or "" for m in body["messages"] if m.get("role") == "system")
    if "Classify the user's message" in system:
        return {"content": "smalltalk"}
    summary = system.split(SUMMARY_HEADER, 1)[1] if SUMMARY_HEADER in system else ""
    return {"content": "She lives in Lisbon." if "Lisbon" in summary else "I don't know."}


@pytest.mark.timeout(120)
def test_a_fact_from_long_ago_is_still_answered(client, worker, sandbox, db, fake_openai, tenants):
    """Turn 5 of a long conversation said a fact no tool saved; 300 messages later it is out of every window.
    The turn that finds history over budget asks for a summary (queue `summaries`, a real worker; the fake
    server's offline model summarises), and the next question is answered from the summary."""
    user = new_user()
    with db("gamma") as conn:
        uid = factories.user(conn, phone=user)["id"]
        factories.messages(conn, uid, 8, role=lambda i: "user" if i % 2 == 0 else "assistant",
                           body=lambda i: f"hello {i}")
        factories.message(conn, uid, body=FACT)
        factories.message(conn, uid, role="assistant", body="Nice!")
        _history(conn, uid, 300)
    converse(client, sandbox, "gamma", user, "ok thanks, and what about the gym plan for next week?")
    with db("gamma") as conn:
        row = wait_for(lambda: (lambda r: r if r and r["covers_to"] > 0 else None)(summaries_db.get(conn, uid)),
                       timeout=60, what="the summary task")
    assert "Lisbon" in row["summary"]
    fake_openai.script({"respond": _answer_from_summary}, {"respond": _answer_from_summary})
    question = "Where does my sister Clara live?"
    assert converse(client, sandbox, "gamma", user, question) == "She lives in Lisbon."
    sent = chat_requests(fake_openai, question)[-1]["messages"]
    assert FACT not in json.dumps([m for m in sent if m.get("role") != "system"]), "not from the history"
