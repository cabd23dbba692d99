"""The operator console's door (issue 14), in a real Chromium: sign-in and sign-out, sessions, one tenant per
operator, CSRF and origin checks, the strict Content-Security-Policy, failed sign-ins slowed down."""
from __future__ import annotations

import re
import time

import fakeredis
import pytest
import requests

from browser import add_operator, sign_in
from ingress.console import sessions


def test_an_operator_signs_in_sees_their_business_and_signs_out(web, stack_env, page):
    name, password = add_operator(stack_env, "alpha")
    sign_in(page, web, "alpha", name, password)
    page.wait_for_url(re.compile(r"/console/t/alpha/conversations$"))
    assert page.text_content("header .brand") == "Alpha Dental" and name in page.text_content("header .who")
    cookie = next(c for c in page.context.cookies() if c["name"] == "wabot_console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    for link in ("Playground", "Knowledge", "Usage", "Conversations"):
        page.click(f"header nav >> text={link}")
        assert page.locator("nav a[aria-current=page]").text_content() == link
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r"/console/login$"))
    page.goto(f"{web}/console/t/alpha/usage")  # the session is gone
    assert page.url.endswith("/console/login")
    assert page.console_errors == []  # no CSP violation, no script error on any page


def test_a_wrong_password_fails_and_the_sixth_try_is_refused_even_when_right(web, stack_env, page):
    name, password = add_operator(stack_env, "alpha")
    for _ in range(5):
        sign_in(page, web, "alpha", name, "wrong password!")
        assert page.text_content("[role=alert]") == "Wrong tenant, name or password."
    sign_in(page, web, "alpha", name, password)
    assert "Too many failed sign-ins" in page.text_content("[role=alert]")
    assert "/console/t/" not in page.url
    # an unknown tenant or name reads exactly like a wrong password
    sign_in(page, web, "no-such-tenant", name, password)
    assert page.text_content("[role=alert]") == "Wrong tenant, name or password."


def test_an_operator_gets_404_for_another_tenants_pages(web, stack_env, page):
    name, password = add_operator(stack_env, "alpha")
    sign_in(page, web, "alpha", name, password)
    page.wait_for_url(re.compile(r"/conversations$"))
    for path in ("conversations", "playground", "knowledge", "usage"):
        assert page.goto(f"{web}/console/t/beta/{path}").status == 404
        assert page.goto(f"{web}/console/t/nosuch/{path}").status == 404


def test_a_post_without_the_csrf_token_or_from_another_origin_is_refused(web, stack_env, page):
    name, password = add_operator(stack_env, "alpha")
    sign_in(page, web, "alpha", name, password)
    page.wait_for_url(re.compile(r"/conversations$"))
    token = page.get_attribute("meta[name=csrf-token]", "content")
    refused = page.request.post(f"{web}/console/logout", form={}, headers={"Origin": web}, max_redirects=0)
    assert refused.status == 403 and "CSRF" in refused.text()
    forged = page.request.post(f"{web}/console/logout", form={"csrf_token": token},
                               headers={"Origin": "https://evil.example"}, max_redirects=0)
    assert forged.status == 403
    page.goto(f"{web}/console/t/alpha/usage")  # still signed in: neither request did anything
    assert page.url.endswith("/console/t/alpha/usage")


def test_console_pages_carry_a_strict_content_security_policy(web):
    response = requests.get(f"{web}/console/login", timeout=5)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"
    assert "<script>" not in response.text and " on" + "click=" not in response.text


def test_sessions_end_when_idle_too_long_or_too_old():
    r = fakeredis.FakeRedis()
    started = time.time()
    session = sessions.start(r, "alpha", 1, "ana", now=started)
    assert sessions.load(r, session.sid, now=started + 60).operator == "ana"
    assert sessions.load(r, session.sid, now=started + sessions.MAX_SECONDS + 1) is None
    fresh = sessions.start(r, "alpha", 1, "ana")
    assert r.ttl(next(iter(r.keys("wabot:console:session:*")))) <= sessions.IDLE_SECONDS
    sessions.end(r, fresh.sid)
    assert sessions.load(r, fresh.sid) is None and sessions.load(r, "x" * 200) is None


def test_console_errors_are_pages_and_the_api_keeps_json(web, stack_env, page):
    assert page.goto(f"{web}/console/no/such/page").status == 404
    assert page.text_content("h1") == "Not found"
    assert requests.get(f"{web}/no/such/endpoint", timeout=5).json()["error"] == "not_found"
