"""Confirmation before anything destructive (issue 15): a tool annotated `destructiveHint: true` by its MCP server, or
listed by the tenant under `confirm.tools` (an HTTP tool here), is not run when the model asks; the bot says exactly
what it is about to do and runs it only after the user's yes in the next message, before the expiry (the injected
clock decides); "no", any other answer or silence past the expiry cancels it; a confirmed action runs at most once
even when its turn is rolled back and redelivered."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from conftest import fresh_dsn
from helpers import wait_for
from mcp_servers import quiet_model, shop  # noqa: F401 (fixtures)
from mcp_servers import Bot, Clock, calls, chat_requests, make_tenant, says, tenant_doc, tool_results
from shared.tools.confirmation import is_no, is_yes


@pytest.fixture(scope="module")
def bot(settings, pg_url, fake_openai, shop, weather_api):
    servers = [{"name": "shop", "url": shop.url, "allow_private_network": True, "ping_seconds": 1,
                "user_argument": "customer_phone"}]
    weather = {"name": "get_weather", "description": "Current weather for a city", "method": "GET",
               "url": f"{weather_api.url}/v1/current?city={{city}}", "allow_private_network": True,
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    doc = tenant_doc("mcp_confirm", fresh_dsn(pg_url, "mcpc"), fake_openai.url, servers, http_tools=[weather],
                     confirm={"tools": ["get_weather"], "expiry_minutes": 5})
    doc["enabled_agents"] = ["orchestrator", "db_agent", "http_agent"]
    bot = Bot(make_tenant(settings, doc), Clock())
    bot.registry.start(wait_seconds=20)
    wait_for(lambda: "shop__cancel_order" in bot.registry.names("mcp"), what="shop listed")
    return bot


def cancels(shop, order: str) -> list[dict]:
    return [c for c in calls(shop.record) if c["tool"] == "cancel_order" and c["args"]["order_id"] == order]


def ask_to_cancel(bot, fake_openai, user, order: str):
    fake_openai.script({"tool_calls": [{"name": "shop__cancel_order", "arguments": {"order_id": order}}]},
                       {"content": "this must not be used: the question is ours"})
    return bot.say(user, f"please cancel my shop order {order}")


def test_a_destructive_tool_waits_for_yes_then_runs_once(bot, shop, fake_openai):
    user = bot.user()
    assert bot.registry.needs_confirmation("shop__cancel_order")
    assert not bot.registry.needs_confirmation("shop__lookup_order")  # read-only tools run at once
    reply = ask_to_cancel(bot, fake_openai, user, "C-1")
    assert reply.response.awaiting_confirmation
    assert "shop__cancel_order" in reply.text and '"C-1"' in reply.text and "YES" in reply.text
    assert "Cancel a shop order for good" in reply.text          # what it does, in the tool's own words
    assert len(chat_requests(fake_openai)) == 1                  # our question, not the model's words
    assert cancels(shop, "C-1") == []
    (action,) = bot.pending(user)
    assert action["status"] == "pending" and action["expires_at"] == bot.clock() + timedelta(minutes=5)

    fake_openai.reset()
    fake_openai.script({"respond": lambda body: {"content": "Done. " + tool_results({"json": body})[-1]}})
    bot.clock.now += timedelta(minutes=2)
    reply = bot.say(user, "Yes!")
    (run,) = cancels(shop, "C-1")
    assert run["args"]["customer_phone"] == user.phone           # filled by the server, never by the model
    assert reply.text.startswith("Done.") and "cancelled" in reply.text
    assert reply.response.tools_used[0] == "shop__cancel_order"
    assert [a["status"] for a in bot.pending(user)] == ["done"]

    fake_openai.script(says("You're welcome"), says("You're welcome"))
    bot.say(user, "yes")                                          # nothing waits any more: runs nothing
    assert len(cancels(shop, "C-1")) == 1


def test_no_cancels_and_nothing_runs(bot, shop, fake_openai):
    user = bot.user()
    ask_to_cancel(bot, fake_openai, user, "C-2")
    fake_openai.reset()
    reply = bot.say(user, "no")
    assert reply.text.startswith("OK, I've cancelled it and did nothing") and "C-2" in reply.text
    assert chat_requests(fake_openai) == [] and cancels(shop, "C-2") == []
    assert [a["status"] for a in bot.pending(user)] == ["cancelled"]


def test_any_other_answer_cancels_and_is_answered_as_usual(bot, shop, fake_openai):
    user = bot.user()
    ask_to_cancel(bot, fake_openai, user, "C-3")
    fake_openai.reset()
    fake_openai.script(says("Sure, what else?"), says("Sure, what else?"))
    reply = bot.say(user, "actually, tell me about your opening hours")
    assert reply.text == "Sure, what else?"
    assert cancels(shop, "C-3") == [] and [a["status"] for a in bot.pending(user)] == ["cancelled"]


def test_silence_past_the_expiry_cancels_it(bot, shop, fake_openai):
    user = bot.user()
    ask_to_cancel(bot, fake_openai, user, "C-4")
    bot.clock.now += timedelta(minutes=5, seconds=1)
    fake_openai.reset()
    reply = bot.say(user, "yes")
    assert reply.text.startswith("That request expired, so I did not do it") and "C-4" in reply.text
    assert cancels(shop, "C-4") == [] and [a["status"] for a in bot.pending(user)] == ["expired"]


def test_a_confirmed_action_runs_at_most_once_when_its_turn_is_redelivered(bot, shop, fake_openai):
    user = bot.user()
    ask_to_cancel(bot, fake_openai, user, "C-5")
    fake_openai.reset()
    fake_openai.script({"content": "Cancelled."})
    bot.say(user, "yes", commit=False)                # the worker died before the turn committed
    assert len(cancels(shop, "C-5")) == 1
    asked = len(chat_requests(fake_openai))
    reply = bot.say(user, "yes")                      # the redelivered turn: the claim stayed, nothing runs again
    assert len(cancels(shop, "C-5")) == 1
    assert reply.text.startswith("I started this but was interrupted") and "C-5" in reply.text  # told, honestly
    assert len(chat_requests(fake_openai)) == asked   # our own words: no model call
    assert [a["status"] for a in bot.pending(user)] == ["unknown"]
    later = bot.say(user, "yes")                      # said once; a later yes runs nothing and is a message again
    assert not later.text.startswith("I started this") and len(cancels(shop, "C-5")) == 1
    assert [a["status"] for a in bot.pending(user)] == ["unknown"]


def test_an_http_tool_the_tenant_lists_waits_for_yes_too(bot, weather_api, fake_openai):
    user = bot.user()
    seen = len(weather_api.requests_seen("/v1/current"))
    fake_openai.script({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Split"}}]})
    reply = bot.say(user, "what's the weather in Split?")
    assert reply.response.awaiting_confirmation and '"Split"' in reply.text
    assert len(weather_api.requests_seen("/v1/current")) == seen
    fake_openai.script({"content": "22°C in Split"})
    assert bot.say(user, "ok").text == "22°C in Split"
    assert len(weather_api.requests_seen("/v1/current")) == seen + 1


def test_an_invalid_call_is_returned_to_the_model_and_nothing_waits(bot, fake_openai):
    user = bot.user()
    fake_openai.script({"tool_calls": [{"name": "shop__cancel_order", "arguments": {"order": 1}}]},
                       {"content": "Which order?"})
    reply = bot.say(user, "please cancel my shop order")
    assert reply.text == "Which order?" and bot.pending(user) == []
    assert json.loads(tool_results(chat_requests(fake_openai)[-1])[0])["isError"] is True


@pytest.mark.parametrize("text,yes,no", [("yes", True, False), ("Yes!", True, False), ("ok.", True, False),
                                         ("go ahead", True, False), ("sí", True, False), ("no", False, True),
                                         ("No thanks", False, True), ("yes, but change the date", False, False),
                                         ("maybe", False, False), ("", False, False)])
def test_only_an_explicit_yes_confirms(text, yes, no):
    assert is_yes(text) is yes and is_no(text) is no
