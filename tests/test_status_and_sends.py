"""Delivery/seen reports update the outbox row; Infobip errors are stored with Infobip's body; reminders send."""
from datetime import datetime, timedelta, timezone

import pytest
import requests

import factories
from helpers import AUTH, NUMBERS, delivery_report, inbound, infobip_time, new_user, wait_for
from shared.delivery.infobip.errors import parse_error


def reply_to(sandbox, web, user, text="hello"):
    requests.post(f"{web}/webhooks/infobip", json=inbound(NUMBERS["alpha"], user, {"type": "TEXT", "text": text}),
                  headers=AUTH, timeout=5).raise_for_status()
    return wait_for(lambda: [r for r in sandbox.requests(path="/whatsapp/1/message/text")
                             if r["json"]["to"] == user], what="reply")[0]


def outbound_row(db, message_id, status):
    with db("alpha") as conn:
        return wait_for(lambda: conn.execute("SELECT * FROM outbound_messages WHERE message_id = %s AND status = %s",
                                             (message_id, status)).fetchone(), what=f"outbound status {status}")


@pytest.mark.clock
def test_delivered_then_late_pending_then_seen(web, worker, sandbox, db):
    user = new_user()
    mid = reply_to(sandbox, web, user)["json"]["messageId"]
    outbound_row(db, mid, "sent")
    r = requests.post(f"{web}/webhooks/infobip/status", json=delivery_report(mid, user, "DELIVERED", "DELIVERED_TO_HANDSET"),
                      headers=AUTH, timeout=5)
    assert r.status_code == 200 and r.json()["accepted"] == 1
    row = outbound_row(db, mid, "delivered")
    assert row["delivered_at"] is not None
    # a PENDING that arrives late never moves the message back
    requests.post(f"{web}/webhooks/infobip/status", json=delivery_report(mid, user, "PENDING", "PENDING_ENROUTE"),
                  headers=AUTH, timeout=5).raise_for_status()
    seen_at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=5)
    seen = {"results": [{"messageId": mid, "from": user, "to": NUMBERS["alpha"],
                         "sentAt": infobip_time(seen_at - timedelta(seconds=20)), "seenAt": infobip_time(seen_at)}]}
    requests.post(f"{web}/webhooks/infobip", json=seen, headers=AUTH, timeout=5).raise_for_status()
    row = outbound_row(db, mid, "seen")
    assert row["seen_at"] == seen_at


def test_report_for_an_unknown_tenant_is_ignored(client):
    resp = client.post("/webhooks/infobip/status", json=delivery_report("nobody.123", "1555", "DELIVERED", "X"), headers=AUTH)
    assert resp.status_code == 200 and resp.get_json()["ignored"] == 1


def test_infobip_rejection_is_stored_with_its_error_body(web, worker, sandbox, db):
    user = new_user()
    body = {"requestError": {"serviceException": {"messageId": "BAD_REQUEST", "text": "Bad request",
                                                  "validationErrors": {"to": ["invalid destination"]}}}}
    sandbox.script({"status": 400, "body": body})
    mid = reply_to(sandbox, web, user)["json"]["messageId"]
    row = outbound_row(db, mid, "failed")
    assert row["error"]["code"] == "BAD_REQUEST" and row["error"]["http_status"] == 400
    assert row["error"]["details"] == {"to": ["invalid destination"]}
    assert len([r for r in sandbox.requests(path="/whatsapp/1/message/text") if r["json"]["to"] == user]) == 1


def test_error_bodies_of_both_formats_parse():
    old = parse_error(429, {"requestError": {"serviceException": {"messageId": "TOO_MANY_REQUESTS", "text": "slow"}}})
    assert (old.code, old.retryable) == ("TOO_MANY_REQUESTS", True)
    new = parse_error(400, {"errorCode": "E400", "description": "Invalid", "violations": [{"property": "to"}]})
    assert (new.code, new.text, new.retryable, new.details) == ("E400", "Invalid", False, [{"property": "to"}])
    assert parse_error(502, "<html>bad gateway</html>").code == "HTTP_502"
    assert parse_error(500, {"requestError": "weird"}).code == "HTTP_500"
    assert parse_error(None, None).retryable


@pytest.mark.clock
def test_a_due_reminder_is_sent_once_and_marked_late(worker, sandbox, db, settings):
    from shared.queueing.tasks import TASK_DISPATCH_REMINDERS, enqueue, make_celery

    user = new_user()
    with db("alpha") as conn:
        uid = factories.user(conn, phone=user)["id"]
        rid = factories.reminder(conn, uid, text="take the pills",
                                 due_at=datetime.now(timezone.utc) - timedelta(hours=1))["id"]
    celery = make_celery(settings)
    for _ in range(3):  # three dispatches racing over the same due reminder
        enqueue(celery, TASK_DISPATCH_REMINDERS, {})
    sent = wait_for(lambda: [r for r in sandbox.requests(path="/whatsapp/1/message/text")
                             if r["json"]["to"] == user], what="reminder send")
    with db("alpha") as conn:
        row = wait_for(lambda: conn.execute("SELECT r.*, o.status AS out_status FROM reminders r "
                                            "JOIN outbound_messages o ON o.id = r.outbound_id WHERE r.id = %s "
                                            "AND o.status = 'sent'", (rid,)).fetchone(), what="reminder sent")
        assert conn.execute("SELECT count(*) AS n FROM outbound_messages WHERE reminder_id = %s",
                            (rid,)).fetchone()["n"] == 1
    assert row["status"] == "sent" and row["late"] is True
    assert len(sent) == 1 and "take the pills" in sent[0]["json"]["content"]["text"]


def test_reports_are_retried_for_as_long_as_the_tenant_database_is_away(stack_env, monkeypatch):
    """A database outage of any length delays reports (by at most 5 minutes after it ends); it never drops them."""
    for key in ("REDIS_URL", "WEBHOOK_VERIFY_TOKEN", "TENANTS_FILE", "LLM_PROVIDER"):
        monkeypatch.setenv(key, stack_env[key])
    import psycopg

    from workers.base import backoff
    from workers.events import apply_report

    assert apply_report.max_retries is None and apply_report.retry_on == (psycopg.OperationalError,)
    assert all(0 <= backoff(retries, apply_report.retry_base, apply_report.retry_cap) <= 300
               for retries in (0, 1, 5, 10, 100, 5000))
