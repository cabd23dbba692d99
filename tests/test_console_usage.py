"""The console's Usage page (issue 14), in a real Chromium against the real stack: the tokens of turns that happened
(real webhooks answered by the real worker), latency percentiles, today's budget and what is spent of it, and a
send Infobip refused with its reason; on a phone screen too; another tenant's usage is 404."""
from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone

import pytest
import requests

import factories
from browser import add_operator, sign_in
from helpers import AUTH, NUMBERS, inbound, new_user, wait_for


def _signed_in(page, web, stack_env, tenant_id: str = "alpha") -> None:
    name, password = add_operator(stack_env, tenant_id)
    sign_in(page, web, tenant_id, name, password)
    page.wait_for_url(re.compile(r"/console/t/.+/conversations$"))


def _local_day(moment: datetime, tenant) -> date:
    return moment.astimezone(tenant.config.tz).date()


def _tokens_on(conn, tenant, day: date) -> int:
    """The tenant's tokens of one local day."""
    since = datetime.combine(day, time(0), tzinfo=tenant.config.tz)
    return conn.execute("SELECT coalesce(sum(total_tokens), 0) AS n FROM llm_usage WHERE created_at >= %s "
                        "AND created_at < %s", (since, since + timedelta(days=1))).fetchone()["n"]


def _page_today(page) -> date:
    """The usage page's "today": the last day of the period it shows."""
    return date.fromisoformat(page.get_attribute("#period", "data-until"))


def _turn(web: str, user: str, text: str) -> None:
    body = inbound(NUMBERS["alpha"], user, {"type": "TEXT", "text": text})
    requests.post(f"{web}/webhooks/infobip", json=body, headers=AUTH, timeout=5).raise_for_status()


@pytest.fixture
def old_calls(db, tenants):
    """Two model calls of five days ago (tenant-local noon), latencies 100 and 300 ms; deleted afterwards."""
    tenant = tenants.require("alpha")
    day = datetime.now(timezone.utc).astimezone(tenant.config.tz).date() - timedelta(days=5)
    noon = datetime.combine(day, time(12), tzinfo=tenant.config.tz)
    with db("alpha") as conn:
        rows = [factories.usage(conn, prompt_tokens=700, completion_tokens=77, latency_ms=ms, created_at=noon)
                for ms in (100, 300)]
    yield day
    with db("alpha") as conn:
        conn.execute("DELETE FROM llm_usage WHERE id = ANY(%s)", ([r["id"] for r in rows],))


@pytest.mark.clock
def test_the_usage_page_shows_turns_latency_budget_and_a_refused_send(web, worker, sandbox, db, tenants, stack_env,
                                                                     page, old_calls):
    ok_user, refused_user = new_user(), new_user()
    sandbox.script({"status": 400, "to": refused_user,
                    "body": {"errorCode": "E400", "description": "Invalid destination address"}})
    _turn(web, ok_user, "hello")
    _turn(web, refused_user, "hello")
    with db("alpha") as conn:
        wait_for(lambda: conn.execute("SELECT 1 FROM outbound_messages o JOIN users u ON u.id = o.user_id "
                                      "WHERE u.phone = %s AND o.status = 'failed'", (refused_user,)).fetchone(),
                 30, what="the refused send recorded failed")
        wait_for(lambda: conn.execute("SELECT 1 FROM outbound_messages o JOIN users u ON u.id = o.user_id "
                                      "WHERE u.phone = %s AND o.status = 'sent'", (ok_user,)).fetchone(),
                 30, what="the other reply sent")
        rows = conn.execute("SELECT u.created_at FROM llm_usage u JOIN users s ON s.id = u.user_id "
                            "WHERE s.phone = ANY(%s)", ([ok_user, refused_user],)).fetchall()
    alpha = tenants.require("alpha")
    turn_day = _local_day(max(r["created_at"] for r in rows), alpha)
    assert len(rows) >= 2

    _signed_in(page, web, stack_env)
    page.click("header nav >> text=Usage")
    page.wait_for_url(re.compile(r"/console/t/alpha/usage$"))
    # "today" is the page's own (a moved clock may cross midnight between the turns and the page)
    page_today = _page_today(page)
    assert page_today in (turn_day, turn_day + timedelta(days=1))
    with db("alpha") as conn:
        today, on_turn_day = _tokens_on(conn, alpha, page_today), _tokens_on(conn, alpha, turn_day)
    assert on_turn_day > 0
    assert page.get_attribute("[data-used-today]", "data-used-today") == str(today)
    assert "unlimited" in page.text_content("#budget")  # alpha has no daily budget
    if today:  # a day without usage has no row
        assert page.text_content(f"#days tr[data-day='{page_today.isoformat()}'] .total") == str(today)
    assert page.text_content(f"#days tr[data-day='{turn_day.isoformat()}'] .total") == str(on_turn_day)
    # the charts are server-drawn SVG: 30 bars each, today's bar carrying today's tokens
    assert page.locator("#tokens-chart svg.wide rect.bar").count() == 30 and page.is_visible("#tokens-chart svg.wide")
    assert page.get_attribute("#tokens-chart svg.wide rect.bar >> nth=-1", "data-value") == str(today)
    old = page.locator(f"#days tr[data-day='{old_calls.isoformat()}'] td")
    assert [old.nth(i).text_content() for i in range(8)] == [old_calls.isoformat(), "2", "1400", "154", "1554",
                                                             "200", "290", "298"]
    refused = page.locator("#failed-sends tr", has_text=refused_user)
    assert "failed" in refused.text_content() and "Invalid destination address" in refused.text_content()
    assert "HTTP 400 E400" in refused.locator(".reason").text_content()
    assert page.console_errors == []


@pytest.fixture
def delta_spent(db, tenants):
    """Delta's budget (300 tokens a day) spent for the length of a test: the row is deleted afterwards, so other
    tests' delta turns still get answers."""
    tenant = tenants.require("delta")
    budget = tenant.config.daily_token_budget
    with db("delta") as conn:
        row = factories.usage(conn, prompt_tokens=budget, latency_ms=50)
    yield budget
    with db("delta") as conn:
        conn.execute("DELETE FROM llm_usage WHERE id = %s", (row["id"],))


@pytest.mark.clock
def test_a_spent_budget_shows_on_a_phone(web, db, tenants, stack_env, page, delta_spent):
    page.set_viewport_size({"width": 390, "height": 844})
    _signed_in(page, web, stack_env, "delta")
    page.goto(f"{web}/console/t/delta/usage")
    with db("delta") as conn:
        today = _tokens_on(conn, tenants.require("delta"), _page_today(page))
    assert page.get_attribute("[data-used-today]", "data-used-today") == str(today)
    assert f"of {delta_spent:,} tokens used today" in page.text_content("#budget")
    assert page.is_visible(".budget-spent") and page.get_attribute("meter", "max") == str(delta_spent)
    # nothing wider than the phone: the page does not scroll sideways
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.is_visible("#tokens-chart svg.narrow") and not page.is_visible("#tokens-chart svg.wide")
    assert page.locator("#tokens-chart svg.narrow").bounding_box()["width"] <= 390
    assert page.console_errors == []


def test_another_tenants_usage_is_404(web, stack_env, page):
    _signed_in(page, web, stack_env, "alpha")
    for path in ("usage", "usage.json"):
        assert page.goto(f"{web}/console/t/beta/{path}").status == 404
    mine = page.goto(f"{web}/console/t/alpha/usage.json")
    assert mine.status == 200 and len(mine.json()["days"]) == 30
