"""The admin API (/api/v1, issue 12): per-tenant operator tokens, every endpoint for the right tenant and refused
for the wrong one, no token or a revoked token; filters and pagination; validation errors as JSON; the OpenAPI
description generated from the same schemas; the operator's name (never the token) in the logs; the CLI."""
from __future__ import annotations

import logging
import subprocess
import sys
import uuid

import pytest
from psycopg.rows import dict_row

import factories
from helpers import new_user

from devtools.devstack import ROOT
from ingress.admin_api.api import ROUTES
from ingress.admin_api.tokens import hash_token, new_token
from shared.db import operators

API = "/api/v1/tenants"


def _operator(db, tenant_id: str, revoked: bool = False) -> tuple[str, str]:
    token, name = new_token(), f"op-{uuid.uuid4().hex[:8]}"
    with db(tenant_id) as conn:
        conn.row_factory = dict_row
        operators.create(conn, name, hash_token(token))
        if revoked:
            operators.revoke(conn, name)
    return name, token


@pytest.fixture
def ops(db):
    return {"alpha": _operator(db, "alpha"), "beta": _operator(db, "beta"),
            "revoked": _operator(db, "alpha", revoked=True)}


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _alpha_user(db, **columns) -> dict:
    with db("alpha") as conn:
        user = factories.user(conn, **columns)
        factories.message(conn, user["id"], body=f"hello {user['phone']}")
        factories.memory_item(conn, user["id"], title="likes tea")
        factories.reminder(conn, user["id"], text="dentist")
        factories.usage(conn, user_id=user["id"], prompt_tokens=7, completion_tokens=3)
    return user


def _endpoints(user_id: int) -> list[tuple[str, str, dict | None, int]]:
    """(method, path under the tenant, JSON body, status for the right operator): every endpoint."""
    return [("GET", "/conversations", None, 200), ("GET", f"/conversations/{user_id}", None, 200),
            ("GET", f"/conversations/{user_id}/messages", None, 200),
            ("POST", f"/conversations/{user_id}/takeover", {"reason": "complaint"}, 200),
            ("POST", f"/conversations/{user_id}/messages", {"text": "Hi, a person here"}, 202),
            ("POST", f"/conversations/{user_id}/handback", {}, 200),
            ("GET", f"/conversations/{user_id}/opt-out", None, 200), ("GET", "/users/lookup?phone=X", None, 200),
            ("GET", f"/users/{user_id}/export", None, 200), ("GET", "/usage", None, 200),
            ("POST", f"/users/{user_id}/forget", None, 200)]


def _call(client, method: str, path: str, body, headers: dict):
    return client.open(path, method=method, json=body, headers=headers)


def test_every_route_is_tested_here():
    assert len([r for r in ROUTES if "/knowledge/" not in r.rule]) == len(_endpoints(1))  # knowledge: own file


def test_every_endpoint_answers_its_own_tenants_operator(client, db, ops):
    user = _alpha_user(db)
    for method, path, body, status in _endpoints(user["id"]):
        path = path.replace("phone=X", f"phone=%2B{user['phone']}")
        resp = _call(client, method, f"{API}/alpha{path}", body, _auth(ops["alpha"][1]))
        assert resp.status_code == status, (method, path, resp.get_json())
        assert resp.is_json


@pytest.mark.parametrize("who", ["other tenant's token", "no token", "revoked token", "garbage token",
                                 "unknown tenant"])
def test_every_endpoint_refuses_the_wrong_caller(client, db, ops, who):
    user = _alpha_user(db)
    tenant, headers = "alpha", {
        "other tenant's token": _auth(ops["beta"][1]), "no token": {}, "revoked token": _auth(ops["revoked"][1]),
        "garbage token": _auth("wbo_" + "x" * 43), "unknown tenant": _auth(ops["alpha"][1])}[who]
    if who == "unknown tenant":
        tenant = "nosuch"
    for method, path, body, _status in _endpoints(user["id"]):
        path = path.replace("phone=X", f"phone={user['phone']}")
        resp = _call(client, method, f"{API}/{tenant}{path}", body, headers)
        assert resp.status_code == 401, (who, method, path)
        body_text = resp.get_data(as_text=True)
        assert user["phone"] not in body_text and "Ada" not in body_text
        assert resp.get_json()["error"] == "unauthorized"
    with db("alpha") as conn:  # nothing happened to the user
        assert conn.execute("SELECT state FROM users WHERE id = %s", (user["id"],)).fetchone()["state"] == "bot"


def test_a_tenants_operator_never_sees_another_tenants_users(client, db, ops):
    with db("beta") as conn:
        beta_user = factories.user(conn, name="Bea")
    resp = client.get(f"{API}/alpha/conversations/{beta_user['id']}", headers=_auth(ops["alpha"][1]))
    assert resp.status_code == 404 or resp.get_json()["phone"] != beta_user["phone"]
    listed = client.get(f"{API}/alpha/conversations?q={beta_user['phone']}", headers=_auth(ops["alpha"][1]))
    assert listed.get_json()["conversations"] == []


def test_list_filters_searches_and_paginates(client, db, ops):
    tag = uuid.uuid4().hex[:8]
    with db("alpha") as conn:
        users = [factories.user(conn, name=f"Zed {tag} {i}") for i in range(5)]
        factories.message(conn, users[0]["id"], body=f"my order {tag}-parcel is late")
    headers = _auth(ops["alpha"][1])
    found = client.get(f"{API}/alpha/conversations?q={tag}-parcel", headers=headers).get_json()["conversations"]
    assert [c["user_id"] for c in found] == [users[0]["id"]]
    by_phone = client.get(f"{API}/alpha/conversations?q=%2B{users[2]['phone']}", headers=headers).get_json()
    assert [c["user_id"] for c in by_phone["conversations"]] == [users[2]["id"]]
    client.post(f"{API}/alpha/conversations/{users[1]['id']}/takeover", json={}, headers=headers)
    human = client.get(f"{API}/alpha/conversations?state=human&q={tag}", headers=headers).get_json()
    assert [c["user_id"] for c in human["conversations"]] == [users[1]["id"]]
    seen, page = [], 1
    while page:
        got = client.get(f"{API}/alpha/conversations?q=Zed {tag}&per_page=2&page={page}", headers=headers).get_json()
        seen += [c["user_id"] for c in got["conversations"]]
        page = got["next_page"]
    assert sorted(seen) == sorted(u["id"] for u in users)


def test_takeover_send_handback_and_delivery_status(client, db, ops):
    user = _alpha_user(db)
    headers, base = _auth(ops["alpha"][1]), f"{API}/alpha/conversations/{user['id']}"
    assert client.post(f"{base}/takeover", json={"reason": "angry"}, headers=headers).get_json() == {
        "user_id": user["id"], "state": "human", "changed": True}
    assert client.post(f"{base}/takeover", json={}, headers=headers).get_json()["changed"] is False
    sent = client.post(f"{base}/messages", json={"text": "A person here"}, headers=headers)
    assert sent.status_code == 202
    messages = client.get(f"{base}/messages", headers=headers).get_json()["messages"]
    mine = next(m for m in messages if m["body"] == "A person here")
    assert mine["role"] == "operator" and mine["delivery"] and mine["delivery"][0]["status"]
    assert client.post(f"{base}/handback", json={}, headers=headers).get_json()["state"] == "bot"
    with db("alpha") as conn:
        actors = [r["actor"] for r in conn.execute("SELECT actor FROM conversation_events WHERE user_id = %s",
                                             (user["id"],))]
    assert actors and all(a == f"operator:{ops['alpha'][0]}" for a in actors)


def test_opt_out_status(client, db, ops):
    with db("alpha") as conn:
        user = factories.user(conn, state="opted_out")
    got = client.get(f"{API}/alpha/conversations/{user['id']}/opt-out", headers=_auth(ops["alpha"][1])).get_json()
    assert got["opted_out"] is True and got["state"] == "opted_out"
    refused = client.post(f"{API}/alpha/conversations/{user['id']}/messages", json={"text": "hi"},
                          headers=_auth(ops["alpha"][1]))
    assert refused.status_code == 409 and "opted_out" in refused.get_json()["message"]


def test_export_and_forget(client, db, ops):
    user = _alpha_user(db)
    headers = _auth(ops["alpha"][1])
    data = client.get(f"{API}/alpha/users/{user['id']}/export", headers=headers).get_json()
    assert data["user"]["phone"] == user["phone"]
    assert [m["body"] for m in data["messages"]] == [f"hello {user['phone']}"]
    assert [m["title"] for m in data["memory_chunks"]] == ["likes tea"]
    assert [r["text"] for r in data["reminders"]] == ["dentist"]
    assert [u["total_tokens"] for u in data["llm_usage"]] == [10]
    gone = client.post(f"{API}/alpha/users/{user['id']}/forget", headers=headers)
    assert gone.status_code == 200 and gone.get_json()["deleted"]["messages"] == 1
    assert client.get(f"{API}/alpha/users/{user['id']}/export", headers=headers).status_code == 404
    assert client.post(f"{API}/alpha/users/{user['id']}/forget", headers=headers).status_code == 404
    with db("alpha") as conn:
        actions = conn.execute("SELECT action, actor, subject_hash, detail::text FROM audit_log "
                               "WHERE actor = %s ORDER BY id", (f"operator:{ops['alpha'][0]}",)).fetchall()
    assert [a["action"] for a in actions] == ["user.export", "user.forget"]
    assert all(user["phone"] not in str(a) for a in actions)
    assert actions[0]["subject_hash"] == actions[1]["subject_hash"]


def test_usage_per_day(client, db, ops):
    with db("beta") as conn:
        factories.usage(conn, prompt_tokens=5, completion_tokens=5)
    days = client.get(f"{API}/beta/usage", headers=_auth(ops["beta"][1])).get_json()["days"]
    assert days and days[-1]["total_tokens"] >= 10 and days[-1]["calls"] >= 1


@pytest.mark.parametrize("method,path,body,field", [
    ("GET", "/conversations?per_page=1000", None, "per_page"),
    ("GET", "/conversations?state=sleeping", None, "state"),
    ("GET", "/conversations?colour=red", None, "colour"),
    ("GET", "/usage?from=2026-02-01&to=2026-01-01", None, "_schema"),
    ("POST", "/conversations/1/messages", {"text": "   "}, "text"),
    ("POST", "/conversations/1/messages", {"text": "x" * 5000}, "text"),
    ("POST", "/conversations/1/messages", {}, "text"),
    ("POST", "/conversations/1/takeover", {"reason": 5}, "reason"),
])
def test_invalid_input_is_a_json_400_naming_the_field(client, ops, method, path, body, field):
    resp = _call(client, method, f"{API}/alpha{path}", body, _auth(ops["alpha"][1]))
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "invalid_input" and field in resp.get_json()["details"]


def test_a_body_that_is_not_json_or_too_large_is_refused(client, ops):
    headers = _auth(ops["alpha"][1])
    resp = client.post(f"{API}/alpha/conversations/1/messages", data="text=hi", headers=headers)
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_json"
    resp = client.post(f"{API}/alpha/conversations/1/messages", json={"text": "x" * 70_000}, headers=headers)
    assert resp.status_code == 413 and resp.is_json


def test_openapi_is_generated_from_the_schemas(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert len([op for ops in doc["paths"].values() for op in ops]) == len(ROUTES)
    listing = doc["paths"]["/tenants/{tenant_id}/conversations"]["get"]
    per_page = next(p for p in listing["parameters"] if p["name"] == "per_page")
    assert per_page["schema"]["maximum"] == 100  # the validator's bound, read from the schema
    send = doc["paths"]["/tenants/{tenant_id}/conversations/{user_id}/messages"]["post"]
    assert send["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SendBody"}
    assert doc["components"]["schemas"]["SendBody"]["properties"]["text"]["maxLength"] == 4096
    assert "operatorToken" in doc["components"]["securitySchemes"]


def test_requests_are_logged_with_the_operators_name_never_the_token(client, ops, caplog):
    name, token = ops["alpha"]
    with caplog.at_level(logging.INFO, logger="ingress.admin_api"):
        client.get(f"{API}/alpha/conversations?q=secret-search", headers=_auth(token))
        client.get(f"{API}/alpha/conversations", headers=_auth(ops["revoked"][1]))
    lines = [r for r in caplog.records if r.name == "ingress.admin_api"]
    assert any(getattr(r, "operator", None) == name and getattr(r, "status", None) == 200 for r in lines)
    dumped = " ".join(f"{r.getMessage()} {r.__dict__}" for r in lines)
    assert token not in dumped and ops["revoked"][1] not in dumped and "secret-search" not in dumped


def _wabot(stack_env, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devtools.cli", *argv], env=stack_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_cli_operators_add_list_revoke(stack_env, tenants, client):
    name = f"cli-{uuid.uuid4().hex[:6]}"
    added = _wabot(stack_env, "operators", "add", "--tenant", "beta", "--name", name)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("wbo_") and len(token) > 40
    assert client.get(f"{API}/beta/conversations", headers=_auth(token)).status_code == 200
    listed = _wabot(stack_env, "operators", "list", "--tenant", "beta")
    assert name in listed.stdout and token not in listed.stdout
    assert _wabot(stack_env, "operators", "add", "--tenant", "beta", "--name", name).returncode == 2
    assert _wabot(stack_env, "operators", "revoke", "--tenant", "beta", "--name", name).returncode == 0
    assert client.get(f"{API}/beta/conversations", headers=_auth(token)).status_code == 401
    assert "revoked" in _wabot(stack_env, "operators", "list", "--tenant", "beta").stdout


def test_cli_conversations(stack_env, db):
    with db("beta") as conn:
        user = factories.user(conn, name="Cleo")
        factories.message(conn, user["id"], body="where is my bike")
    listed = _wabot(stack_env, "conversations", "list", "--tenant", "beta", "--search", "where is my bike")
    assert str(user["id"]) in listed.stdout, listed.stderr
    shown = _wabot(stack_env, "conversations", "show", "--tenant", "beta", "--phone", "+" + user["phone"])
    assert "where is my bike" in shown.stdout, shown.stderr
    took = _wabot(stack_env, "conversations", "takeover", "--tenant", "beta", "--phone", user["phone"])
    assert took.returncode == 0 and "human" in took.stdout, took.stderr
    back = _wabot(stack_env, "conversations", "handback", "--tenant", "beta", "--phone", user["phone"])
    assert back.returncode == 0 and "bot" in back.stdout, back.stderr
