"""The conversation engine end to end, through the webhook and a real worker: the seed's examples with the mock
provider (tenant alpha) and with the OpenAI provider talking through the `openai` SDK to a local fake server
(tenant gamma); tool gating, the history budget, usage accounting and the daily budget."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

import factories
from helpers import AUTH, NUMBERS, WEATHER_KEY, inbound, new_user, wait_for
from shared.conversation.tokens import estimate_messages

DB_TOOLS = {"upsert_item", "search_memory", "list_events", "delete_item", "set_reminder", "list_reminders",
            "cancel_reminder"}


def say(client, tenant, user, text, received_at=None):
    body = inbound(NUMBERS[tenant], user, {"type": "TEXT", "text": text}, received_at=received_at)
    resp = client.post("/webhooks/infobip", json=body, headers=AUTH)
    assert resp.status_code == 200, resp.get_json()
    return body["results"][0]["messageId"]


def replies(sandbox, user):
    return [r["json"]["content"]["text"] for r in sandbox.requests(path="/whatsapp/1/message/text")
            if r["json"]["to"] == user]


def converse(client, sandbox, tenant, user, text, received_at=None):
    """Send one message (written at `received_at`, default now) and wait for the bot's reply to it."""
    before = len(replies(sandbox, user))
    say(client, tenant, user, text, received_at)
    return wait_for(lambda: replies(sandbox, user)[before:], timeout=30, what=f"reply to {text!r}")[-1]


@pytest.mark.clock
@pytest.mark.parametrize("tenant,tz", [("alpha", "Europe/London"), ("gamma", "Europe/Berlin")])
def test_seed_examples_end_to_end(tenant, tz, client, worker, sandbox, db, weather_api):
    """Every message of this conversation is written at one moment, `written`: the bot reads "tomorrow", "this
    week" and "in 2 hours" from when the user wrote, so the expectations hold whenever the turns run (a test
    straddling midnight or a Sunday night included)."""
    user = new_user()
    written = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    local = written.astimezone(ZoneInfo(tz))
    reply = converse(client, sandbox, tenant, user, "Remember I have a dentist appointment tomorrow at 2 PM", written)
    assert reply == "I've saved your dentist appointment for tomorrow at 2 PM as an event."
    tomorrow = local.date() + timedelta(days=1)
    with db(tenant) as conn:
        item = conn.execute("SELECT m.* FROM memory_chunks m JOIN users u ON u.id = m.user_id WHERE u.phone = %s",
                            (user,)).fetchone()
    assert item["kind"] == "event" and "dentist" in item["title"].lower()
    assert item["starts_at"].astimezone(ZoneInfo(tz)).replace(tzinfo=None) == datetime.combine(
        tomorrow, datetime.min.time()).replace(hour=14)

    reply = converse(client, sandbox, tenant, user, "What do I have scheduled tomorrow?", written)
    assert "Dentist appointment tomorrow at 2 PM" in reply
    reply = converse(client, sandbox, tenant, user, "What do I have scheduled this week?", written)
    if tomorrow.isocalendar()[:2] == local.date().isocalendar()[:2]:
        assert reply.startswith("Based on your schedule, you have:") and "Dentist appointment" in reply
    else:  # written on a Sunday: tomorrow is next week
        assert reply == "You have nothing scheduled for that period."

    seen_before = len(weather_api.requests_seen("/v1/current"))
    reply = converse(client, sandbox, tenant, user, "What's the weather like?", written)
    assert reply == "Current weather: 22°C, partly cloudy"
    call = weather_api.requests_seen("/v1/current")[seen_before]
    assert call["headers"].get("X-Api-Key") == WEATHER_KEY

    reply = converse(client, sandbox, tenant, user, "Remind me to call mom in 2 hours", written)
    assert reply.startswith("Done! I'll remind you to call mom")
    with db(tenant) as conn:
        rem = conn.execute("SELECT r.* FROM reminders r JOIN users u ON u.id = r.user_id WHERE u.phone = %s",
                           (user,)).fetchone()
        usage = conn.execute("SELECT l.* FROM llm_usage l JOIN users u ON u.id = l.user_id WHERE u.phone = %s "
                             "ORDER BY l.id", (user,)).fetchall()
        metas = [r["meta"] for r in conn.execute("SELECT m.meta FROM messages m JOIN users u ON u.id = m.user_id "
                                                  "WHERE u.phone = %s AND m.role = 'assistant'", (user,))]
    assert rem["status"] == "pending" and rem["text"] == "call mom"
    assert rem["due_at"] == written + timedelta(hours=2)
    assert all(u["prompt_tokens"] > 0 and u["request_id"] for u in usage)
    # llm_usage names the tools each model call asked for; the schedule questions' list_events is prefetched
    # (shared.conversation.prefetch: no model call asked for it), so the turns' meta names it
    assert {"upsert_item", "get_weather", "set_reminder"} <= {t for u in usage for t in u["tools_used"]}
    assert [m["tools_used"] for m in metas if "list_events" in m["tools_used"]] == [["list_events"]] * 2
    expected = ("mock", "mock-chat") if tenant == "alpha" else ("openai", "gpt-4o-mini")
    assert {(u["provider"], u["model"]) for u in usage} == {expected}


def chat_requests(fake_openai, user_text):
    """The chat requests the fake LLM server got for a turn whose last user message is `user_text`."""
    out = []
    for r in fake_openai.requests:
        if r["path"] != "/v1/chat/completions":
            continue
        users = [m for m in r["json"]["messages"] if m["role"] == "user"]
        if users and users[-1]["content"] == user_text:
            out.append(r["json"])
    return out


def test_tool_gating_as_the_llm_server_sees_it(client, worker, sandbox, fake_openai):
    user = new_user()
    converse(client, sandbox, "gamma", user, "hello")
    greeting = chat_requests(fake_openai, "hello")
    assert greeting and all("tools" not in r for r in greeting), "a greeting must carry no tool schemas"

    text = "What do I have scheduled this week?"
    converse(client, sandbox, "gamma", user, text)
    offered = {t["function"]["name"] for r in chat_requests(fake_openai, text) for t in r.get("tools", [])}
    assert offered and offered <= DB_TOOLS and "get_weather" not in offered

    text = "What's the weather like in Paris?"
    converse(client, sandbox, "gamma", user, text)
    offered = {t["function"]["name"] for r in chat_requests(fake_openai, text) for t in r.get("tools", [])}
    assert offered == {"get_weather"}


def test_after_500_messages_the_prompt_still_fits_the_budget(client, worker, sandbox, db, fake_openai, tenants):
    user = new_user()
    with db("gamma") as conn:
        uid = factories.user(conn, phone=user)["id"]
        factories.messages(conn, uid, 500, role=lambda i: "user" if i % 2 == 0 else "assistant",
                           body=lambda i: f"message number {i} about the weekly plan and other long details " * 3)
    text = "ok and what about the last thing I said?"
    converse(client, sandbox, "gamma", user, text)
    sent = chat_requests(fake_openai, text)[-1]["messages"]
    budget = tenants.require("gamma").config.max_context_tokens
    assert estimate_messages(sent) <= budget
    assert 2 < len(sent) < 100
    # the newest history is what is kept; it comes before the turn's context (time, memories) and the message
    assert "message number 499" in sent[-3]["content"] and sent[-2]["role"] == "system"


def _item(db, tenant, user, title):
    with db(tenant) as conn:
        return factories.memory_item(conn, factories.user(conn, phone=user)["id"], title=title, content=title)["id"]


def test_a_tool_call_on_another_users_item_or_with_bad_arguments_changes_nothing(client, worker, sandbox, db,
                                                                                 fake_openai):
    victim, attacker = new_user(), new_user()
    victim_item = _item(db, "gamma", victim, "victim's private note")
    fake_openai.script({"tool_calls": [{"name": "delete_item", "arguments": {"id": victim_item}}]},
                       {"tool_calls": [{"name": "upsert_item", "arguments": {"kind": "banana", "title": 7}}]},
                       {"content": "I could not do that."})
    text = "please delete note %d" % victim_item
    reply = converse(client, sandbox, "gamma", attacker, text)
    assert reply == "I could not do that."
    with db("gamma") as conn:
        assert conn.execute("SELECT 1 FROM memory_chunks WHERE id = %s", (victim_item,)).fetchone() is not None
        assert conn.execute("SELECT count(*) AS n FROM memory_chunks m JOIN users u ON u.id = m.user_id "
                            "WHERE u.phone = %s", (attacker,)).fetchone()["n"] == 0
    calls = chat_requests(fake_openai, text)
    tool_messages = [m for m in calls[-1]["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 2
    for m in tool_messages:
        assert json.loads(m["content"]).get("isError") is True


@pytest.mark.clock
def test_daily_token_budget_answers_politely_without_the_llm(client, worker, sandbox, db, tenants):
    tenant = tenants.require("delta")
    budget = tenant.config.daily_token_budget
    for _attempt in range(2):  # a second try only when the tenant's day rolled over during the first
        user = new_user()
        day = datetime.now(timezone.utc).astimezone(tenant.config.tz).date()
        with db("delta") as conn:
            # whatever other tests spent, spend the rest of today's budget
            factories.usage(conn, provider="mock", model="mock-chat", prompt_tokens=budget, total_tokens=budget)
            calls_before = conn.execute("SELECT count(*) AS n FROM llm_usage").fetchone()["n"]
        reply = converse(client, sandbox, "delta", user, "hello, what's new?")
        if datetime.now(timezone.utc).astimezone(tenant.config.tz).date() == day:
            break
    assert "try again later" in reply
    with db("delta") as conn:
        assert conn.execute("SELECT count(*) AS n FROM llm_usage").fetchone()["n"] == calls_before


def test_under_the_budget_the_llm_answers(client, worker, sandbox, db):
    user = new_user()
    with db("alpha") as conn:  # alpha has no daily budget
        before = conn.execute("SELECT count(*) AS n FROM llm_usage").fetchone()["n"]
    assert converse(client, sandbox, "alpha", user, "hello").startswith("Hello!")
    with db("alpha") as conn:
        assert conn.execute("SELECT count(*) AS n FROM llm_usage").fetchone()["n"] > before


@pytest.mark.clock
def test_relative_times_are_read_from_when_the_user_wrote(client, worker, sandbox, db):
    """A message that reaches the worker late (a backlog, an outage) still means what it meant when written."""
    user = new_user()
    written = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=3)
    reply = converse(client, sandbox, "alpha", user, "Remind me to call the lab in 4 hours", written)
    assert reply.startswith("Done! I'll remind you to call the lab")
    with db("alpha") as conn:
        rem = conn.execute("SELECT r.* FROM reminders r JOIN users u ON u.id = r.user_id WHERE u.phone = %s",
                           (user,)).fetchone()
    assert rem["due_at"] == written + timedelta(hours=4)


def test_said_at_trusts_received_at_only_within_bounds():
    from shared.conversation.turn import SAID_AT_MAX_LAG, clock_from, said_at

    now = datetime(2027, 1, 1, 0, 0, 3, tzinfo=timezone.utc)
    before_midnight = datetime(2026, 12, 31, 23, 59, 58, tzinfo=timezone.utc)
    assert said_at(before_midnight, now) == before_midnight
    assert said_at(None, now) == now
    assert said_at(now + timedelta(minutes=5), now) == now                      # a clock ahead of ours
    assert said_at(now - SAID_AT_MAX_LAG - timedelta(seconds=1), now) == now    # far too old to trust
    ticks = iter([now, now + timedelta(seconds=2)])
    clock = clock_from(before_midnight, lambda: next(ticks))
    assert clock() == before_midnight + timedelta(seconds=2)


def test_elapsed_hours_cross_a_daylight_saving_change_as_real_hours():
    """Found by the moved-clock guard: "in 4 hours" at 22:00 the night London springs forward is 03:00 BST."""
    from shared.llm.timephrases import parse_when

    london = ZoneInfo("Europe/London")
    night = datetime(2027, 3, 27, 22, 0)  # local, GMT
    due = parse_when("remind me in 4 hours", night, london)
    assert due == datetime(2027, 3, 28, 2, 0, tzinfo=timezone.utc).astimezone(london)
    assert due.isoformat() == "2027-03-28T03:00:00+01:00"
    assert parse_when("remind me tomorrow at 2 PM", night, london) == datetime(2027, 3, 28, 14, 0)  # wall clock
    assert parse_when("in 2 days", night, london) == datetime(2027, 3, 29, 22, 0)
