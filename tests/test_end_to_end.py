"""The real path: gunicorn ingress -> Redis -> Celery worker process -> Postgres -> fake Infobip over HTTP."""
import json
import uuid

import pytest
import requests

from helpers import AUTH, INFOBIP_KEY, NUMBERS, inbound, new_user, wait_for


def sends_to(sandbox, user):
    return [r for r in sandbox.requests(path="/whatsapp/1/message/text") if (r["json"] or {}).get("to") == user]


@pytest.mark.clock
def test_hello_becomes_a_whatsapp_reply(web, worker, sandbox, db):
    user = new_user()
    body = inbound(NUMBERS["alpha"], user, {"type": "TEXT", "text": "hello"}, name="Ana")
    resp = requests.post(f"{web}/webhooks/infobip", json=body, headers=AUTH, timeout=5)
    assert resp.status_code == 200
    assert resp.json()["accepted"] == 1
    request_id = resp.json()["request_id"]
    assert resp.headers["X-Request-Id"] == request_id

    sent = wait_for(lambda: sends_to(sandbox, user), what="the reply at the fake Infobip")
    assert len(sent) == 1
    req = sent[0]
    assert req["method"] == "POST" and req["path"] == "/whatsapp/1/message/text"
    assert req["headers"]["Authorization"] == f"App {INFOBIP_KEY}"
    assert req["headers"]["Content-Type"].startswith("application/json")
    assert req["json"]["from"] == NUMBERS["alpha"] and req["json"]["to"] == user
    assert "Alpha Dental" in req["json"]["content"]["text"]
    assert req["json"]["messageId"].startswith("alpha.")
    # the turn marked the message read (blue ticks) and showed "typing..." before answering
    inbound_id = body["results"][0]["messageId"]
    read = sandbox.requests(path=f"/whatsapp/1/senders/{NUMBERS['alpha']}/message/{inbound_id}/read")
    assert len(read) == 1 and read[0]["seq"] < req["seq"]
    typing = [r for r in sandbox.requests(path="/whatsapp/1/events")
              if r["json"]["events"][0]["destinations"] == [{"to": user}]]
    assert len(typing) == 1 and typing[0]["seq"] < req["seq"]

    with db("alpha") as conn:
        u = conn.execute("SELECT * FROM users WHERE phone = %s", (user,)).fetchone()
        assert u["name"] == "Ana" and u["last_inbound_at"] is not None
        msgs = conn.execute("SELECT role, body, status, message_type, request_id FROM messages WHERE user_id = %s "
                            "ORDER BY id", (u["id"],)).fetchall()
        assert [(m["role"], m["status"]) for m in msgs] == [("user", "answered"), ("assistant", "stored")]
        assert msgs[0]["body"] == "hello" and msgs[1]["body"] == req["json"]["content"]["text"]
        assert {m["request_id"] for m in msgs} == {request_id}
        out = wait_for(lambda: conn.execute("SELECT * FROM outbound_messages WHERE user_id = %s AND status = 'sent'",
                                            (u["id"],)).fetchone(), what="outbound row marked sent")
        assert out["message_id"] == req["json"]["messageId"]
        assert out["infobip_response"]["status"]["groupName"] == "PENDING"
        usage = conn.execute("SELECT * FROM llm_usage WHERE user_id = %s", (u["id"],)).fetchone()
        assert usage["provider"] == "mock" and usage["total_tokens"] > 0 and usage["request_id"] == request_id


def test_request_id_follows_the_message_through_the_worker_logs(web, worker, sandbox):
    user = new_user()
    resp = requests.post(f"{web}/webhooks/infobip", json=inbound(NUMBERS["alpha"], user, {"type": "TEXT",
                                                                                          "text": "trace me"}),
                         headers={**AUTH, "X-Request-Id": "req_trace_" + uuid.uuid4().hex[:8]}, timeout=5)
    rid = resp.json()["request_id"]
    assert rid.startswith("req_trace_")
    wait_for(lambda: sends_to(sandbox, user), what="reply")
    lines = [json.loads(l) for l in worker.log().splitlines() if l.startswith("{") and rid in l]
    names = {l.get("message") for l in lines if l.get("request_id") == rid}
    assert "message processed successfully" in names and "sent to infobip" in names
    processed = next(l for l in lines if l.get("message") == "message processed successfully")
    assert processed["tenant_id"] == "alpha" and processed["token_usage"]["total"] > 0
    assert INFOBIP_KEY not in worker.log()


def test_two_tenants_keep_their_messages_in_their_own_databases(web, worker, sandbox, db):
    user = new_user()
    for tenant, text in (("alpha", "hello alpha"), ("beta", "hello beta")):
        requests.post(f"{web}/webhooks/infobip", json=inbound(NUMBERS[tenant], user, {"type": "TEXT", "text": text}),
                      headers=AUTH, timeout=5).raise_for_status()
    wait_for(lambda: len(sends_to(sandbox, user)) == 2, what="both replies")
    replies = {r["json"]["from"]: r["json"]["content"]["text"] for r in sends_to(sandbox, user)}
    assert "Alpha Dental" in replies[NUMBERS["alpha"]] and "Beta Bikes" in replies[NUMBERS["beta"]]
    for tenant, mine, other in (("alpha", "hello alpha", "hello beta"), ("beta", "hello beta", "hello alpha")):
        with db(tenant) as conn:
            bodies = {r["body"] for r in conn.execute(
                "SELECT m.body FROM messages m JOIN users u ON u.id = m.user_id WHERE u.phone = %s AND m.role = 'user'",
                (user,))}
            assert bodies == {mine}, (tenant, bodies)
            assert other not in bodies


def test_the_same_webhook_twice_is_stored_once(web, worker, sandbox, db):
    user = new_user()
    body = inbound(NUMBERS["alpha"], user, {"type": "TEXT", "text": "hello twice"})
    for _ in range(2):
        requests.post(f"{web}/webhooks/infobip", json=body, headers=AUTH, timeout=5).raise_for_status()
    wait_for(lambda: sends_to(sandbox, user), what="reply")
    with db("alpha") as conn:
        wait_for(lambda: conn.execute("SELECT count(*) AS n FROM messages m JOIN users u ON u.id = m.user_id "
                                      "WHERE u.phone = %s AND m.role = 'assistant'", (user,)).fetchone()["n"] >= 1)
        rows = conn.execute("SELECT m.role FROM messages m JOIN users u ON u.id = m.user_id WHERE u.phone = %s",
                            (user,)).fetchall()
    assert sorted(r["role"] for r in rows).count("user") == 1
