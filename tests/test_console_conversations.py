"""The console's Conversations pages (issue 14), in a real Chromium against the real stack (gunicorn, a Celery
worker, the fake Infobip): a new user's message appears in the list within 2 s without a reload, with an unread
count that clears once the conversation is opened; take over (the bot stops answering), send as the operator
(delivered after Infobip's report), hand back; a send outside the 24-hour window is refused with its reason;
export downloads the JSON; forget erases the user; another tenant's pages and JSON are 404; a POST without the CSRF
token is refused; the pages fit a phone's screen. No page logs a console error (no CSP violation)."""
from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import requests

import factories
from browser import add_operator, sign_in
from helpers import AUTH, NUMBERS, delivery_report, inbound, new_user, texts_to, wait_for, wait_texts
from shared.db import console_reads


def _write(web: str, phone: str, text: str, name: str = "Test User", received_at: datetime | None = None) -> None:
    """The user `phone` writes to alpha: the webhook Infobip would post."""
    body = inbound(NUMBERS["alpha"], phone, {"type": "TEXT", "text": text}, name=name, received_at=received_at)
    assert requests.post(f"{web}/webhooks/infobip", json=body, headers=AUTH, timeout=10).status_code == 200


def _signed_in(page, web: str, stack_env: dict) -> None:
    name, password = add_operator(stack_env, "alpha")
    sign_in(page, web, "alpha", name, password)
    page.wait_for_url(re.compile(r"/console/t/alpha/conversations$"))


def _row(page, phone: str):
    return page.locator(f"li.conv:has(.conv-phone:text-is('+{phone}'))")


def _user_id(db, tenant_id: str, phone: str) -> int:
    with db(tenant_id) as conn:
        return wait_for(lambda: (conn.execute("SELECT id FROM users WHERE phone = %s", (phone,)).fetchone() or {}
                                 ).get("id"), what=f"user {phone} stored")


def test_a_new_user_appears_live_with_an_unread_count_that_clears_when_opened(web, worker, stack_env, page):
    _signed_in(page, web, stack_env)
    phone, name = new_user(), f"Newcomer {uuid.uuid4().hex[:6]}"
    sent = time.monotonic()
    _write(web, phone, "Hello, is anyone there?", name=name)
    _row(page, phone).wait_for(timeout=2_000)  # the page was not reloaded: the poll brought it
    assert time.monotonic() - sent < 2.5
    row = _row(page, phone)
    assert row.locator(".conv-name").text_content() == name
    assert row.locator(".badge").text_content() == "Bot"
    assert row.locator(".unread").text_content() == "1" and row.locator(".unread").is_visible()
    row.locator("a").click()
    page.wait_for_url(re.compile(r"/conversations/\d+$"))
    assert page.locator(".msg.user .msg-body").first.text_content() == "Hello, is anyone there?"
    assert page.locator(".msg.user .msg-type").first.text_content() == "text"
    page.click("text=← Conversations")
    _row(page, phone).wait_for()
    assert not _row(page, phone).locator(".unread").is_visible()  # opened: nothing unread
    _write(web, phone, "Second message")
    wait_for(lambda: _row(page, phone).locator(".unread").text_content() == "1", 3, what="unread again")
    assert page.console_errors == []


def test_take_over_send_as_operator_delivered_and_hand_back(web, worker, sandbox, db, stack_env, page):
    _signed_in(page, web, stack_env)
    phone = new_user()
    _write(web, phone, "hello")
    wait_texts(sandbox, phone, 1, "the bot's answer")
    page.goto(f"{web}/console/t/alpha/conversations/{_user_id(db, 'alpha', phone)}")
    page.click("[data-action=takeover]")
    page.wait_for_selector("[data-conv-state=human]")
    assert page.text_content("[data-conv-state]") == "Human"
    assert page.locator("[data-action=handback]").is_visible()
    assert not page.locator("[data-action=takeover]").is_visible()
    before = len(wait_texts(sandbox, phone, 2, "the handoff notice"))
    _write(web, phone, "is a person there?")
    page.locator(".msg.user .msg-body", has_text="is a person there?").wait_for(timeout=3_000)  # live
    time.sleep(2)
    assert len(texts_to(sandbox, phone)) == before  # the bot stays quiet while a person has it

    page.fill("textarea[name=text]", "Hi, this is Ana from the clinic.")
    page.click("[data-send-form] button[type=submit]")
    page.wait_for_selector("[role=status]:has-text('queued')")
    post = wait_for(lambda: next((r for r in sandbox.requests(path="/whatsapp/1/message/text")
                                  if r["json"]["to"] == phone
                                  and r["json"]["content"]["text"] == "Hi, this is Ana from the clinic."), None),
                    what="the operator's message at Infobip")
    mine = page.locator(".msg.operator", has_text="Hi, this is Ana from the clinic.")
    mine.locator("[data-status=sent]").wait_for(timeout=5_000)
    report = delivery_report(post["json"]["messageId"], phone, "DELIVERED", "DELIVERED_TO_HANDSET")
    assert requests.post(f"{web}/webhooks/infobip/status", json=report, headers=AUTH, timeout=10).status_code == 200
    mine.locator("[data-status=delivered]").wait_for(timeout=5_000)  # live, no reload
    assert mine.locator(".msg-role").text_content() == "operator"

    page.click("[data-action=handback]")
    page.wait_for_selector("[data-conv-state=bot]")
    with db("alpha") as conn:
        actors = {r["actor"] for r in conn.execute(
            "SELECT actor FROM conversation_events e JOIN users u ON u.id = e.user_id WHERE u.phone = %s", (phone,))}
    assert actors == {f"operator:{page.text_content('header .who')}"}
    answered = len(texts_to(sandbox, phone))
    _write(web, phone, "thanks, bot")
    wait_texts(sandbox, phone, answered + 1, "the bot answers again")
    assert page.console_errors == []


def test_outside_the_24_hour_window_the_send_is_refused_with_the_reason(web, worker, db, stack_env, page):
    _signed_in(page, web, stack_env)
    phone = new_user()
    _write(web, phone, "an old question", received_at=datetime.now(timezone.utc) - timedelta(hours=30))
    user_id = _user_id(db, "alpha", phone)
    page.goto(f"{web}/console/t/alpha/conversations/{user_id}")
    window = page.text_content("[data-window]")
    assert "window is closed" in window and "only a template can go" in window
    page.fill("textarea[name=text]", "Sorry for the late answer")
    page.click("[data-send-form] button[type=submit]")
    alert = page.text_content("[role=alert]")
    assert alert.startswith("Not sent:") and "outside the 24-hour window" in alert and "reengage" in alert
    assert page.input_value("textarea[name=text]") == "Sorry for the late answer"  # kept to edit
    refused = page.locator(".msg.operator", has_text="Sorry for the late answer")
    assert refused.locator("[data-status=failed]").text_content().startswith("not sent: outside the 24-hour window")
    assert page.console_errors == []


def test_export_downloads_the_json_and_forget_erases_the_user(web, worker, db, stack_env, page):
    _signed_in(page, web, stack_env)
    phone = new_user()
    _write(web, phone, "please keep this")
    user_id = _user_id(db, "alpha", phone)
    page.goto(f"{web}/console/t/alpha/conversations/{user_id}")
    with page.expect_download() as download:
        page.click("[data-action=export]")
    data = json.loads(open(download.value.path(), encoding="utf-8").read())
    assert data["user"]["phone"] == phone and "please keep this" in [m["body"] for m in data["messages"]]
    assert download.value.suggested_filename == f"alpha-user-{user_id}.json"

    page.click("[data-action=forget]")
    assert "cannot be undone" in page.text_content("main")
    page.click("[data-action=forget-confirm]")
    page.wait_for_url(re.compile(r"/conversations\?notice=forgotten$"))
    assert "erased" in page.text_content("[role=status]")
    assert _row(page, phone).count() == 0
    assert page.console_errors == []
    assert page.goto(f"{web}/console/t/alpha/conversations/{user_id}").status == 404  # (a console error, expected)
    with db("alpha") as conn:
        assert conn.execute("SELECT 1 FROM users WHERE phone = %s", (phone,)).fetchone() is None
        assert conn.execute("SELECT 1 FROM console_reads WHERE user_id = %s", (user_id,)).fetchone() is None


def test_another_tenants_conversations_are_404_and_a_post_needs_the_csrf_token(web, db, stack_env, page):
    with db("beta") as conn:
        theirs = factories.user(conn)
    with db("alpha") as conn:
        mine = factories.user(conn)
    _signed_in(page, web, stack_env)
    token = page.get_attribute("meta[name=csrf-token]", "content")
    base = f"{web}/console/t/beta/conversations"
    for url in (base, f"{base}.json", f"{base}/{theirs['id']}", f"{base}/{theirs['id']}.json"):
        assert page.goto(url).status == 404, url
    for action in ("takeover", "handback", "send", "export", "forget"):
        answer = page.request.post(f"{base}/{theirs['id']}/{action}", form={"csrf_token": token, "text": "x"},
                                   headers={"Origin": web}, max_redirects=0)
        assert answer.status == 404, action
    ours = f"{web}/console/t/alpha/conversations/{mine['id']}"
    refused = page.request.post(f"{ours}/takeover", form={}, headers={"Origin": web}, max_redirects=0)
    assert refused.status == 403 and "CSRF" in refused.text()
    refused = page.request.post(f"{ours}/forget", form={}, headers={"Origin": web, "Accept": "application/json"},
                                max_redirects=0)
    assert refused.status == 403
    with db("alpha") as conn:
        assert conn.execute("SELECT state FROM users WHERE id = %s", (mine["id"],)).fetchone()["state"] == "bot"
    with db("beta") as conn:
        assert conn.execute("SELECT state FROM users WHERE id = %s", (theirs["id"],)).fetchone()["state"] == "bot"


def test_search_filter_and_paging(web, db, stack_env, page):
    tag = uuid.uuid4().hex[:8]
    with db("alpha") as conn:
        users = [factories.user(conn, name=f"Pager {tag} {i}") for i in range(27)]
        for u in users:
            factories.message(conn, u["id"], body=f"note {tag}")
        conn.execute("UPDATE users SET state = 'human' WHERE id = %s", (users[0]["id"],))
    _signed_in(page, web, stack_env)
    page.fill("input[name=q]", f"Pager {tag}")
    wait_for(lambda: page.locator("li.conv").count() == 25, 5, what="a first page of 25")
    page.click("button:text('Filter')")
    wait_for(lambda: page.locator("li.conv").count() == 25, 5, what="still 25 after submitting")
    page.goto(f"{web}/console/t/alpha/conversations?q=Pager+{tag}&page=2")
    assert page.locator("li.conv").count() == 2
    digits = users[3]["phone"][-8:]
    page.goto(f"{web}/console/t/alpha/conversations?q={digits}")
    assert page.locator("li.conv .conv-phone").all_text_contents() == [f"+{users[3]['phone']}"]
    page.goto(f"{web}/console/t/alpha/conversations?q=Pager+{tag}&state=human")
    assert page.locator("li.conv .conv-name").all_text_contents() == [f"Pager {tag} 0"]
    time.sleep(1.5)  # the poll keeps the filter
    assert page.locator("li.conv").count() == 1
    assert page.console_errors == []


def test_the_pages_fit_a_phone_screen(web, db, stack_env, page):
    with db("alpha") as conn:
        user = factories.user(conn, name="A rather long name for a small screen " + "x" * 30)
        factories.message(conn, user["id"], body="a long message " * 40)
        factories.message(conn, user["id"], role="assistant", body="https://example.com/" + "y" * 200,
                          status="stored")
    page.set_viewport_size({"width": 390, "height": 844})
    _signed_in(page, web, stack_env)
    width = "document.documentElement.scrollWidth"
    assert page.evaluate(width) <= 390
    page.goto(f"{web}/console/t/alpha/conversations/{user['id']}")
    assert page.evaluate(width) <= 390
    for selector in ("[data-action=takeover]", "[data-action=export]", "[data-action=forget]",
                     "[data-send-form] button[type=submit]", "textarea[name=text]"):
        box = page.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
    assert page.console_errors == []


def test_read_marks_never_move_back_and_count_only_the_users_messages(db):
    with db("alpha") as conn:
        user = factories.user(conn)
        first = factories.message(conn, user["id"], body="one")
        second = factories.message(conn, user["id"], body="two")
        factories.message(conn, user["id"], role="assistant", body="reply", status="stored")
        assert console_reads.unread_counts(conn, [user["id"]]) == {user["id"]: 2}
        console_reads.mark_read(conn, user["id"], second["id"], operator_id=1)
        console_reads.mark_read(conn, user["id"], first["id"], operator_id=2)  # late and older: ignored
        assert console_reads.unread_counts(conn, [user["id"]]) == {}
        factories.message(conn, user["id"], body="three")
        assert console_reads.unread_counts(conn, [user["id"]]) == {user["id"]: 1}
