"""The console's Playground (issue 14), in a real Chromium against the real stack: an operator talks to the bot
through the real pipeline (webhook path, worker turn with tools and memory, outbox) as their playground user; each
reply shows its agent, tools and tokens; nothing reaches Infobip for that user while real users are still
answered; the rows are marked playground; reset forgets the conversation."""
from __future__ import annotations

import re

import requests

from browser import add_operator, sign_in
from helpers import AUTH, NUMBERS, inbound, new_user, wait_for
from shared.db.users import is_playground_phone, playground_phone


def _say(page, text: str, replies_before: int) -> str:
    page.fill("#pg-text", text)
    page.click("#pg-send button[type=submit]")
    # (page.wait_for_function evaluates a string: the console's CSP refuses that, so locators wait instead)
    page.locator("#pg-log .pg-assistant").nth(replies_before).wait_for(timeout=30_000)
    return page.locator("#pg-log .pg-assistant").nth(replies_before).locator(".pg-text").text_content()


def _meta(page, index: int) -> dict:
    reply = page.locator("#pg-log .pg-assistant").nth(index)
    return {k: reply.locator(f".pg-{k}").text_content() for k in ("agent", "tools", "tokens")}


def test_the_playground_answers_through_the_real_pipeline_and_sends_nothing_to_infobip(web, worker, sandbox, db,
                                                                                         stack_env, page):
    name, password = add_operator(stack_env, "alpha")
    sign_in(page, web, "alpha", name, password)
    page.wait_for_url(re.compile(r"/conversations$"))
    page.click("header nav >> text=Playground")
    page.wait_for_url(re.compile(r"/console/t/alpha/playground$"))
    with db("alpha") as conn:
        operator_id = conn.execute("SELECT id FROM operators WHERE name = %s", (name,)).fetchone()["id"]
    phone = playground_phone(f"operator:{operator_id}")
    assert is_playground_phone(phone) and len(phone) > 15 and phone in page.text_content("main")

    assert _say(page, "hello", 0).startswith("Hello!")
    assert _say(page, "Remember I have a dentist appointment tomorrow at 2 PM", 1) == (
        "I've saved your dentist appointment for tomorrow at 2 PM as an event.")
    saved = _meta(page, 1)
    assert "upsert_item" in saved["tools"] and saved["agent"] != "agent: none"
    assert re.fullmatch(r"tokens: [1-9]\d* \(\d+ prompt \+ \d+ completion\)", saved["tokens"])
    assert "Dentist appointment" in _say(page, "What do I have scheduled tomorrow?", 2)
    assert "list_events" in _meta(page, 2)["tools"]
    assert page.locator("#pg-log .pg-user .pg-status").all_text_contents() == ["answered"] * 3

    # a real user's turn is still sent to (fake) Infobip
    real = new_user()
    resp = requests.post(f"{web}/webhooks/infobip", json=inbound(NUMBERS["alpha"], real, {"type": "TEXT",
                                                                                           "text": "hello"}),
                         headers=AUTH, timeout=10)
    assert resp.status_code == 200
    wait_for(lambda: [r for r in sandbox.requests(path="/whatsapp/1/message/text") if r["json"]["to"] == real],
             timeout=30, what="the real user's reply at Infobip")

    with db("alpha") as conn:
        user = conn.execute("SELECT * FROM users WHERE phone = %s", (phone,)).fetchone()
        usage = conn.execute("SELECT * FROM llm_usage WHERE user_id = %s", (user["id"],)).fetchall()
        sends = conn.execute("SELECT * FROM outbound_messages WHERE user_id = %s", (user["id"],)).fetchall()
        replies = conn.execute("SELECT meta FROM messages WHERE user_id = %s AND role = 'assistant'",
                               (user["id"],)).fetchall()
        real_usage = conn.execute("SELECT l.playground FROM llm_usage l JOIN users u ON u.id = l.user_id "
                                  "WHERE u.phone = %s", (real,)).fetchall()
    assert user["playground"] and usage and all(u["playground"] for u in usage)
    assert real_usage and not any(u["playground"] for u in real_usage)
    assert len(sends) == 3 and {s["status"] for s in sends} == {"delivered"}
    assert {s["status_name"] for s in sends} == {"DELIVERED_TO_PLAYGROUND"}
    assert all(r["meta"]["token_usage"]["total"] > 0 for r in replies)
    # nothing of the playground user reached Infobip: no send, no blue ticks, no typing indicator
    assert not [r for r in sandbox.requests() if phone in repr(r) or "playground-" in r["path"]]

    page.click("#pg-reset button[type=submit]")
    page.locator("#pg-log li").first.wait_for(state="detached")
    with db("alpha") as conn:
        assert conn.execute("SELECT 1 FROM users WHERE phone = %s", (phone,)).fetchone() is None
        assert conn.execute("SELECT count(*) AS n FROM memory_chunks WHERE user_id = %s",
                            (user["id"],)).fetchone()["n"] == 0
        kept = conn.execute("SELECT count(*) AS n FROM llm_usage WHERE id = ANY(%s) AND playground",
                            ([u["id"] for u in usage],)).fetchone()["n"]
    assert kept == len(usage)  # usage stays on the record, still marked playground
    page.reload()
    assert page.locator("#pg-log li").count() == 0 and page.is_visible("#pg-empty")
    assert "Hello!" in _say(page, "hello", 0)  # a fresh conversation
    assert page.console_errors == []


def test_the_playground_works_without_javascript_and_refuses_other_tenants(web, worker, stack_env, chromium):
    context = chromium.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        name, password = add_operator(stack_env, "alpha")
        sign_in(page, web, "alpha", name, password)
        page.goto(f"{web}/console/t/alpha/playground")
        page.fill("#pg-text", "hello")
        with page.expect_navigation(wait_until="load"):  # the POST and its redirect done before the first reload
            page.click("#pg-send button[type=submit]")
        assert page.url.endswith("/console/t/alpha/playground")
        for _ in range(100):  # no script on the page: reload until the worker stored it and the bot answered
            page.reload()
            if page.locator("#pg-log .pg-assistant").count():
                break
            page.wait_for_timeout(300)
        assert page.locator("#pg-log .pg-user .pg-text").all_text_contents() == ["hello"]
        assert page.locator("#pg-log .pg-assistant .pg-text").first.text_content().startswith("Hello!")
        assert page.goto(f"{web}/console/t/beta/playground/messages.json").status == 404
        forged = page.request.post(f"{web}/console/t/alpha/playground/reset", form={},
                                   headers={"Origin": web}, max_redirects=0)
        assert forged.status == 403
    finally:
        context.close()


def test_the_turn_endpoint_needs_the_webhook_token_and_shows_only_playground_users(web, worker, sandbox):
    url = f"{web}/console/playground/alpha/turns/nope"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"X-Webhook-Token": "wrong"}, timeout=5).status_code == 401
    got = requests.get(url, headers=AUTH, timeout=5)
    assert got.status_code == 200 and got.json() == {"message": None, "done": False, "replies": []}
    real = new_user()  # a real user's answered message is not shown, token or not
    body = inbound(NUMBERS["alpha"], real, {"type": "TEXT", "text": "hello"})
    assert requests.post(f"{web}/webhooks/infobip", json=body, headers=AUTH, timeout=10).status_code == 200
    wait_for(lambda: [r for r in sandbox.requests(path="/whatsapp/1/message/text") if r["json"]["to"] == real],
             timeout=30, what="the real user's reply")
    got = requests.get(f"{web}/console/playground/alpha/turns/{body['results'][0]['messageId']}", headers=AUTH,
                       timeout=5)
    assert got.json() == {"message": None, "done": False, "replies": []}
