"""Prefetched reads (issue 17): a read the intent rules are sure of ("what do I have scheduled this week?") runs
before the first model call and its result is in the turn's context, so the model answers in one call; anything
else (a save, small talk, a read the rules are unsure of) prefetches nothing. The clock is the turn's, never today."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

from helpers import OFFLINE_ENV, new_user
from shared.agents.base import Intent
from shared.config.settings import load_settings
from shared.config.tenants import parse_tenants
from shared.conversation import prefetch
from shared.conversation.engine import respond
from shared.conversation.prompt import PREFETCH_HEADER, build_prompt
from shared.db import messages, users
from shared.errors import ConfigError
from shared.llm.factory import provider_for
from shared.llm.mock import MockProvider
from shared.memory.store import MemoryStore, NewItem
from shared.tools.base import ToolContext
from shared.tools.registry import build_registry

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)   # a Monday
QUESTION = "what do I have scheduled this week?"
SETTINGS = load_settings(OFFLINE_ENV)


def _tenant(**config):
    return parse_tenants({"tenants": [{"tenant_id": "shop", "waba_number": "+1 555 0100",
                                       "db_dsn": "postgresql://u@db.example/shop",
                                       "config": {"business_name": "Shop", "timezone": "Europe/Berlin", **config}}]},
                         SETTINGS, {}).require("shop")


class _Recording(MockProvider):
    """The mock brain, keeping what each call was sent."""

    def __init__(self):
        super().__init__()
        self.sent = []

    def chat(self, messages, *, tools=None, **kw):
        self.sent.append(list(messages))
        return super().chat(messages, tools=tools, **kw)


def _user_with_events(conn, tenant, phone: str) -> int:
    """A user with two events this week (Tuesday 14:00, Thursday 18:00 local) and one the week after."""
    tz = tenant.config.tz
    with conn.transaction():
        uid = users.upsert_user(conn, phone, "Prefetch", NOW)
        MemoryStore(tenant).add_or_defer(conn, uid, [
            NewItem("event", "Dentist appointment", "", datetime(2026, 3, 3, 14, 0, tzinfo=tz)),
            NewItem("event", "Yoga class", "", datetime(2026, 3, 5, 18, 0, tzinfo=tz)),
            NewItem("event", "Tax advisor", "", datetime(2026, 3, 12, 10, 0, tzinfo=tz))])
    return uid


def _turn(conn, tenant, llm, uid: int, phone: str, text: str, now: datetime = NOW):
    with conn.transaction():
        row = messages.insert_inbound(conn, user_id=uid, infobip_message_id=f"pf-{phone}-{now.timestamp()}-{text}",
                                      message_type="TEXT", body=text, payload={"type": "TEXT", "text": text},
                                      received_at=now, request_id="r-pf")
        history = messages.recent_history(conn, uid, 200, before_id=row)
        answer = respond(tenant=tenant, conn=conn, llm=llm, registry=build_registry(tenant),
                         memory=MemoryStore(tenant), user_id=uid, phone=phone, text=text, history=history, now=now,
                         clock=lambda: now, request_id="r-pf")
        messages.insert_assistant_message(conn, user_id=uid, body=answer.text, reply_to=row, request_id="r-pf")
        messages.set_status(conn, row, "answered")
    return answer


def _context(sent: list[dict]) -> str:
    """The system message right before the user's new message: the turn's context."""
    assert sent[-1]["role"] == "user" and sent[-2]["role"] == "system"
    return sent[-2]["content"]


def test_a_schedule_question_is_one_request_with_the_events_in_the_context(tenants, fake_openai):
    """The OpenAI provider against the fake server: one chat request, whose context carries both events of the
    week as data (not the one of next week); the scripted reply is what the user gets."""
    gamma = tenants.require("gamma")
    phone = new_user()
    fake_openai.script({"content": "Dentist on Tuesday at 14:00 and yoga on Thursday at 18:00."})
    before = len(fake_openai.requests)
    with psycopg.connect(gamma.db_dsn, row_factory=dict_row) as conn:
        uid = _user_with_events(conn, gamma, phone)
        answer = _turn(conn, gamma, provider_for(gamma.llm), uid, phone, QUESTION)
    chats = [r["json"] for r in fake_openai.requests[before:] if r["path"] == "/v1/chat/completions"]
    assert len(chats) == 1 and len(answer.calls) == 1
    assert answer.text == "Dentist on Tuesday at 14:00 and yoga on Thursday at 18:00."
    context = _context(chats[0]["messages"])
    assert PREFETCH_HEADER in context and "Dentist appointment" in context and "Yoga class" in context
    assert "Tax advisor" not in context
    assert "list_events" in [t["function"]["name"] for t in chats[0]["tools"]], "the tools stay offered"
    assert answer.response.tools_used == ["list_events"]


def test_the_mock_brain_lists_the_events_in_one_call(tenants):
    alpha = tenants.require("alpha")
    phone, llm = new_user(), _Recording()
    with psycopg.connect(alpha.db_dsn, row_factory=dict_row) as conn:
        uid = _user_with_events(conn, alpha, phone)
        answer = _turn(conn, alpha, llm, uid, phone, QUESTION)
    assert len(answer.calls) == 1 and answer.calls[0].tools_used == ()
    assert answer.text.startswith("Based on your schedule, you have:")
    assert "Dentist appointment" in answer.text and "Yoga class" in answer.text and "Tax advisor" not in answer.text
    assert PREFETCH_HEADER in _context(llm.sent[0])


def test_the_model_still_reads_again_when_the_prefetch_does_not_cover_its_question(tenants):
    """"Friday" prefetches that day; the mock brain wants the whole week, so it calls list_events itself."""
    alpha = tenants.require("alpha")
    phone, llm = new_user(), _Recording()
    with psycopg.connect(alpha.db_dsn, row_factory=dict_row) as conn:
        uid = _user_with_events(conn, alpha, phone)
        answer = _turn(conn, alpha, llm, uid, phone, "What do I have on my calendar on Friday?")
    assert '"start": "2026-03-06", "end": "2026-03-07"' in _context(llm.sent[0])
    assert len(answer.calls) == 2 and answer.calls[0].tools_used == ("list_events",)
    assert answer.response.tools_used == ["list_events", "list_events"]
    assert "Dentist appointment" in answer.text


@pytest.mark.parametrize("text,tool", [("Remember my dentist tomorrow at 2 pm", "upsert_item"),
                                       ("thanks!", None), ("hi", None)])
def test_what_is_not_clearly_a_read_prefetches_nothing(tenants, text, tool):
    alpha = tenants.require("alpha")
    phone, llm = new_user(), _Recording()
    with psycopg.connect(alpha.db_dsn, row_factory=dict_row) as conn:
        uid = _user_with_events(conn, alpha, phone)
        answer = _turn(conn, alpha, llm, uid, phone, text)
    assert all(PREFETCH_HEADER not in m["content"] for sent in llm.sent for m in sent if m["role"] == "system")
    assert answer.response.tools_used == ([tool] if tool else [])
    assert len(answer.calls) == 1


def test_the_prefetched_call_is_logged_and_counted_like_a_models(tenants, caplog):
    """Through ToolRegistry.call: the "tool call" log line, and the turn's tools_used (the turn's log summary and
    the reply's `meta` take it from there)."""
    alpha = tenants.require("alpha")
    phone = new_user()
    with psycopg.connect(alpha.db_dsn, row_factory=dict_row) as conn:
        uid = _user_with_events(conn, alpha, phone)
        with caplog.at_level(logging.INFO, logger="shared.tools.registry"):
            answer = _turn(conn, alpha, MockProvider(), uid, phone, "What reminders do I have?")
    logged = [r for r in caplog.records if r.getMessage() == "tool call"]
    assert [(r.tool, r.outcome) for r in logged] == [("list_reminders", "ok")]
    assert answer.response.tools_used == ["list_reminders"] and len(answer.calls) == 1
    assert answer.text == "You have no pending reminders."


def _plan(tenant, text: str, now: datetime = NOW, intent: Intent = Intent("db", "rules"), offered=None):
    registry = build_registry(tenant)
    ctx = ToolContext(tenant=tenant, conn=None, user_id=1, user_phone="1", memory=None, clock=lambda: now)
    offered = registry.names(group="db") if offered is None else offered
    return [(r.tool, r.arguments) for r in prefetch.plan(ctx, registry, text, intent, offered, now)]


def test_what_is_prefetched_and_with_which_arguments():
    shop = _tenant()
    assert _plan(shop, "What do I have scheduled this week?") == [
        ("list_events", {"start": "2026-03-02", "end": "2026-03-09"})]
    assert _plan(shop, "What's on my calendar tomorrow?") == [
        ("list_events", {"start": "2026-03-03", "end": "2026-03-04"})]
    assert _plan(shop, "What do I have scheduled next week?") == [
        ("list_events", {"start": "2026-03-09", "end": "2026-03-16"})]
    assert _plan(shop, "What do I have scheduled?", NOW + timedelta(days=2)) == [  # no date: the coming 7 days
        ("list_events", {"start": "2026-03-04", "end": "2026-03-11"})]
    assert _plan(shop, "What reminders do I have?") == [("list_reminders", {})]
    assert _plan(shop, "What did I tell you about my car?") == [("search_memory", {"query": "my car"})]


def test_the_dates_are_the_tenants_from_the_turns_now():
    """23:30 UTC on Monday is already Tuesday in Berlin: "tomorrow" is Wednesday there."""
    late = datetime(2026, 3, 2, 23, 30, tzinfo=timezone.utc)
    assert _plan(_tenant(), "What's on my calendar tomorrow?", late) == [
        ("list_events", {"start": "2026-03-04", "end": "2026-03-05"})]
    assert _plan(_tenant(timezone="America/New_York"), "What's on my calendar tomorrow?", late) == [
        ("list_events", {"start": "2026-03-03", "end": "2026-03-04"})]


@pytest.mark.parametrize("text", ["Remind me to check my reminders tomorrow at 9", "Cancel my reminders",
                                  "Remember I have a team meeting on Friday at 10 AM", "Save my schedule: gym at 6",
                                  "What's the weather in Paris?", "hello there"])
def test_no_prefetch_for_writes_and_other_messages(text):
    assert _plan(_tenant(), text) == []


def test_no_prefetch_unless_the_rules_are_sure_the_tool_is_offered_and_the_tenant_wants_it():
    shop = _tenant()
    assert _plan(shop, QUESTION, intent=Intent("db", "embedding", 0.6)) == []
    assert _plan(shop, QUESTION, intent=Intent("mixed", "rules")) == []
    assert _plan(shop, QUESTION, offered=("upsert_item", "list_reminders")) == []
    assert _plan(replace(shop, config=replace(shop.config, prefetch_reads=False)), QUESTION) == []
    assert _tenant(prefetch_reads=False).config.prefetch_reads is False
    with pytest.raises(ConfigError) as err:
        _tenant(prefetch_reads="sometimes")
    assert "prefetch_reads" in str(err.value)


def test_the_prefetched_result_goes_after_the_history_and_leaves_the_prefix_alone():
    shop = _tenant()
    history = [{"id": i, "role": "user" if i % 2 == 0 else "assistant", "body": f"message {i}"} for i in range(6)]
    read = ("list_events", '{"start": "2026-03-02"}', json.dumps({"count": 0, "events": []}))
    plain = build_prompt(shop, NOW, history, QUESTION)
    with_read = build_prompt(shop, NOW, history, QUESTION, prefetched=[read])
    assert with_read.messages[:-2] == plain.messages[:-2]
    assert with_read.messages[-2]["content"].endswith(
        PREFETCH_HEADER + '\n- list_events({"start": "2026-03-02"}) returned: {"count": 0, "events": []}')


def test_a_long_result_is_capped_as_valid_json(tenants):
    """Each result within the limit it is given (never under prefetch.MIN_CHARS), still JSON, marked as cut."""
    alpha = tenants.require("alpha")
    phone = new_user()
    with psycopg.connect(alpha.db_dsn, row_factory=dict_row) as conn:
        with conn.transaction():
            uid = users.upsert_user(conn, phone, "Prefetch", NOW)
            MemoryStore(alpha).add_or_defer(conn, uid, [
                NewItem("event", f"Meeting number {i} " + "x" * 80, "", NOW + timedelta(hours=i + 1))
                for i in range(30)])
            ctx = ToolContext(tenant=alpha, conn=conn, user_id=uid, user_phone=phone, memory=MemoryStore(alpha),
                              clock=lambda: NOW)
            registry = build_registry(alpha)
            done = prefetch.run(ctx, registry, prefetch.plan(ctx, registry, QUESTION, Intent("db", "rules"),
                                                             registry.names(group="db"), NOW), limit=700)
    assert len(done) == 1 and len(done[0].content) <= 700
    assert json.loads(done[0].content)["truncated"] is True
