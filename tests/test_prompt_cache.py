"""Half the tokens (issue 17): a prompt whose prefix a provider can cache, budgets that save what gating removes,
cheap small talk, and one model call for a turn that needs no tool result."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

from helpers import OFFLINE_ENV
from shared.config.settings import load_settings
from shared.config.tenants import parse_tenants
from shared.conversation import engine
from shared.conversation.engine import respond
from shared.conversation.prompt import SUMMARY_HEADER, build_prompt, system_prompt
from shared.conversation.tokens import estimate_messages
from shared.db import messages, users
from shared.errors import ConfigError
from shared.llm.mock import MockProvider
from shared.memory.store import MemoryStore
from shared.tools.registry import build_registry

SETTINGS = load_settings(OFFLINE_ENV)
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def tenant(**config):
    return parse_tenants({"tenants": [{"tenant_id": "shop", "waba_number": "+1 555 0100",
                                       "db_dsn": "postgresql://u@db.example/shop",
                                       "config": {"business_name": "Shop", "timezone": "Europe/London", **config}}]},
                         SETTINGS, {}).require("shop")


def _row(i: int) -> dict:
    return {"id": i + 1, "role": "user" if i % 2 == 0 else "assistant",
            "body": f"message {i}: about the plan for the week and a few other details " * (1 + i % 3)}


def test_the_system_prompt_holds_no_clock_and_the_time_comes_after_the_history():
    shop = tenant()
    history = [_row(i) for i in range(6)]
    a = build_prompt(shop, NOW, history, "hi there, what now?", summary="- likes tea")
    b = build_prompt(shop, NOW + timedelta(hours=5), history + [_row(6), _row(7)], "and then?",
                     summary="- likes tea")
    assert a.messages[0] == b.messages[0] and "2026" not in a.messages[0]["content"]
    assert a.messages[1]["content"] == f"{SUMMARY_HEADER}\n- likes tea"
    assert a.messages[-2]["role"] == "system" and "Now it is Monday 2026-03-02 09:00" in a.messages[-2]["content"]
    shared = a.messages[:-2]  # everything but this turn's context and message
    assert b.messages[:len(shared)] == shared, "the next turn's prompt starts with this turn's prefix"


def test_the_history_window_moves_in_blocks_so_the_prefix_stays_for_several_turns():
    shop = tenant(history_budget_tokens=600)
    starts, rows = [], []
    for turn in range(60):
        rows += [_row(2 * turn), _row(2 * turn + 1)]
        prompt = build_prompt(shop, NOW, rows, "and?", history_budget=600)
        assert estimate_messages(prompt.messages[1:-2]) <= 600
        assert prompt.messages[1]["role"] == "user", "the window starts with the user's message"
        starts.append(prompt.messages[1]["content"])
    moves = sum(1 for x, y in zip(starts, starts[1:]) if x != y)
    assert 3 <= moves <= 20, f"the window start moved {moves} times in 60 turns"


def test_the_history_budget_is_apart_from_the_tool_schemas():
    """Gating that removes tool schemas saves their tokens: the history kept does not grow into their room."""
    shop = tenant()
    history = [_row(i) for i in range(200)]
    with_tools = build_prompt(shop, NOW, history, "and?", budget=3000 - 900, history_budget=1500)
    without = build_prompt(shop, NOW, history, "and?", budget=3000, history_budget=1500)
    assert with_tools.history_used == without.history_used and with_tools.tokens == without.tokens


def test_small_talk_is_short():
    shop = tenant()
    history = [_row(i) for i in range(200)]
    prompt = build_prompt(shop, NOW, history, "thanks!", history_budget=shop.config.smalltalk_history_tokens,
                          small_talk=True, summary="- likes tea")
    assert prompt.messages[0]["content"] == system_prompt(shop, small_talk=True)
    assert len(system_prompt(shop, small_talk=True)) < len(system_prompt(shop)) / 3
    assert prompt.tokens <= 1000 and estimate_messages(prompt.messages) <= 1000


class _Memory:
    def __init__(self):
        self.floors = []

    def relevant_for_prompt(self, conn, user_id, text, min_score=None):
        self.floors.append(min_score)
        return []


def test_small_talk_carries_only_memories_above_its_threshold():
    shop, memory = tenant(smalltalk_memory_min_score=0.7), _Memory()
    engine._memories(shop, None, memory, 1, "thanks", small_talk=True)
    engine._memories(shop, None, memory, 1, "what did I say about my car?", small_talk=False)
    assert memory.floors == [0.7, None]


def _turn(conn, shop, llm, text: str, i: int, now: datetime):
    with conn.transaction():
        uid = users.upsert_user(conn, "15550009999", "Cache", now)
        row = messages.insert_inbound(conn, user_id=uid, infobip_message_id=f"cache-{i}-{now.timestamp()}",
                                      message_type="TEXT", body=text, payload={"type": "TEXT", "text": text},
                                      received_at=now, request_id=f"r{i}")
        history = messages.recent_history(conn, uid, 200, before_id=row)
        answer = respond(tenant=shop, conn=conn, llm=llm, registry=build_registry(shop), memory=MemoryStore(shop),
                         user_id=uid, phone="15550009999", text=text, history=history, now=now,
                         clock=lambda: now, request_id=f"r{i}")
        messages.insert_assistant_message(conn, user_id=uid, body=answer.text, reply_to=row, request_id=f"r{i}")
        messages.set_status(conn, row, "answered")
    return answer


class _Recording(MockProvider):
    def __init__(self):
        super().__init__()
        self.sent = []

    def chat(self, messages, *, tools=None, **kw):
        self.sent.append((json.dumps(messages[0]) + json.dumps(tools or []), messages))
        return super().chat(messages, tools=tools, **kw)


def test_a_save_is_one_model_call_a_question_about_saved_items_one_or_two(tenants):
    """The model writes its reply with a save (the prompt asks it to): the save succeeds and that reply stands.
    A read the rules are sure of is prefetched (tests/test_prefetch.py): one call. Without the prefetch a read
    needs its result, so it costs two calls, the second sharing the whole first prompt."""
    shop = tenants.require("alpha")
    llm = _Recording()
    with psycopg.connect(shop.db_dsn, row_factory=dict_row) as conn:
        saved = _turn(conn, shop, llm, "Remember I have a dentist appointment tomorrow at 2 PM", 1, NOW)
        assert len(saved.calls) == 1 and saved.response.tools_used == ["upsert_item"]
        assert saved.text == "I've saved your dentist appointment for tomorrow at 2 PM as an event."
        listed = _turn(conn, shop, llm, "What do I have scheduled this week?", 2, NOW + timedelta(minutes=3))
        assert len(listed.calls) == 1 and "Dentist appointment" in listed.text
        assert llm.sent[-1][0] == llm.sent[-2][0], "same system prompt and tool schemas, byte for byte"
        unfetched = replace(shop, config=replace(shop.config, prefetch_reads=False))
        listed = _turn(conn, unfetched, llm, "What do I have scheduled this week?", 3, NOW + timedelta(minutes=6))
        assert len(listed.calls) == 2 and "Dentist appointment" in listed.text
        first, second = llm.sent[-2][1], llm.sent[-1][1]
        assert second[:len(first)] == first, "the tool loop's second call extends the first"


def test_the_new_settings_are_validated_with_their_names():
    with pytest.raises(ConfigError) as err:
        tenant(history_budget_tokens=5, summary_max_tokens=-1, smalltalk_memory_min_score=2)
    for key in ("history_budget_tokens", "summary_max_tokens", "smalltalk_memory_min_score"):
        assert key in str(err.value)
