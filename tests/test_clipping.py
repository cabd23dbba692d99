"""Every text sent to a model call is clipped to the tenant's budget (issue 8, part 5): a 60,000-character
message reaches the model shortened, with a visible marker, in every call of the turn (intent classifier, the
tool loop's steps), and the user still gets an answer. The first tests check the pure clipping rules."""
from __future__ import annotations

import random
import uuid

from helpers import wait_for
from shared.agents.intent import intent_messages
from shared.conversation.prompt import fit_messages
from shared.conversation.tokens import MIN_CLIP_TOKENS, clip_text, estimate_messages, estimate_text, estimate_tools
from test_engine import replies, say

MARKER = "shortened from"


def _gibberish(n: int, seed: int) -> str:
    """Words without vowels: no intent rule or example phrase matches them, so the LLM classifier is asked."""
    rnd = random.Random(seed)
    words = []
    while sum(len(w) + 1 for w in words) < n:
        words.append("".join(rnd.choice("bcdfghjklmnpqrstvwxz") for _ in range(rnd.randint(3, 8))))
    return " ".join(words)[:n]


def test_clip_keeps_both_ends_and_says_it_was_shortened():
    text = "START " + "x" * 60_000 + " END"
    clipped = clip_text(text, 500)
    assert estimate_text(clipped) <= 500
    assert clipped.startswith("START") and clipped.endswith("END") and f"{MARKER} {len(text)}" in clipped
    assert clip_text("short", 500) == "short"
    assert estimate_text(clip_text(text, 1)) <= MIN_CLIP_TOKENS  # the floor still holds the budget it claims


def test_fit_messages_drops_old_history_then_clips_the_longest_texts():
    history = [{"role": r, "content": f"turn {i} " * 40} for i, r in enumerate(["user", "assistant"] * 5)]
    messages = [{"role": "system", "content": "You are a bot."}, *history,
                {"role": "user", "content": "U" * 8_000},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
                                                                      "function": {"name": "t", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "R" * 4_000}]
    fitted = fit_messages(messages, 1_000)
    assert estimate_messages(fitted) <= 1_000
    assert fitted[0] == messages[0] and fitted[-2] == messages[-2]  # system prompt and tool-call JSON untouched
    roles = [m["role"] for m in fitted]
    assert roles == ["system", "user", "assistant", "tool"], "history goes before this turn's texts are cut"
    assert all(MARKER in m["content"] for m in (fitted[1], fitted[3]))
    assert fit_messages(messages, 100_000) == messages  # within budget: sent as is


def test_intent_prompt_fits_a_small_budget():
    for budget in (200, 1200, 100_000):
        sent = intent_messages("y" * 60_000, budget)
        assert estimate_messages(sent) <= min(budget, 300) and MARKER in sent[-1]["content"]


def test_a_60000_character_message_fits_every_model_call_and_is_answered(client, worker, sandbox, tenants,
                                                                          fake_openai):
    budget = tenants.require("gamma").config.max_context_tokens
    user, tag = "1555" + str(random.randrange(10**10)).zfill(10), f"zq{uuid.uuid4().hex[:8]}"
    text = tag + " " + _gibberish(60_000 - len(tag) - 1, seed=8)
    assert len(text) == 60_000
    fake_openai.script({"content": "db"},  # the intent classifier's answer
                       {"tool_calls": [{"name": "search_memory", "arguments": {"query": "dentist"}}]})
    say(client, "gamma", user, text)
    reply = wait_for(lambda: replies(sandbox, user), timeout=30, what="reply to the 60,000-character message")[-1]
    assert reply and not reply.startswith("Sorry")

    sent = [r["json"] for r in fake_openai.requests
            if r["path"] == "/v1/chat/completions" and tag in str(r["json"]["messages"])]
    assert len(sent) >= 3, "intent call, a tool step and the answer after it"
    assert "Classify" in sent[0]["messages"][0]["content"], "the intent classifier was asked"
    assert any(m["role"] == "tool" for m in sent[-1]["messages"]), "the last call carries the tool result"
    sizes = [estimate_messages(r["messages"]) + estimate_tools(r.get("tools")) for r in sent]
    print(f"\n60,000-character message ({len(text) // 4} tokens): model calls of {sizes} tokens, budget {budget}")
    for request in sent:
        size = estimate_messages(request["messages"]) + estimate_tools(request.get("tools"))
        assert size <= budget, f"a model call of {size} tokens, budget {budget}"
        users = [m["content"] for m in request["messages"] if m["role"] == "user"]
        assert MARKER in users[-1] and users[-1].startswith(tag)

    # The next turn still carries the long message, clipped, in its history; it fits as well.
    before = len(fake_openai.requests)
    say(client, "gamma", user, "What did I tell you?")
    wait_for(lambda: len(replies(sandbox, user)) >= 2, timeout=30, what="reply to the next message")
    later = [r["json"] for r in fake_openai.requests[before:] if r["path"] == "/v1/chat/completions"]
    assert later and all(estimate_messages(r["messages"]) + estimate_tools(r.get("tools")) <= budget for r in later)
    assert any(tag in m["content"] and MARKER in m["content"] for m in later[0]["messages"] if m["role"] == "user")
