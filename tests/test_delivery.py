"""Delivery you can trust, the outbound half: retries with one messageId, ordered parts, the 24-hour window and its
template, reports that arrive early or say the window closed, reminders sent exactly once.

Real parts: the rows are written with shared.delivery.outbox.queue_reply in the tenant database, their send tasks
published to Redis (`publish_sends`, as the unit of work does after a commit), and posted by the session's Celery
worker process to the Infobip sandbox over HTTP.
"""
from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

import factories
from helpers import AUTH, delivery_report, new_user, wait_for
from shared.db import outbound
from shared.db.pools import TenantPools
from shared.errors import ConfigError
from shared.delivery.infobip.client import InfobipClient, text_body
from shared.delivery.infobip.errors import is_session_error
from shared.delivery.infobip.retry import MAX_ATTEMPTS, parse_retry_after, retry_base_seconds, retry_delay
from shared.delivery.infobip.split import split_text
from shared.db.unit_of_work import Transaction, UnitOfWork
from shared.delivery.outbox import client_for, new_message_id, queue_reply, send_outbound
from shared.delivery.reports import receive_report
from shared.queueing.tasks import TASK_DISPATCH_REMINDERS, TASK_RECOVER, TASK_SEND, enqueue, make_celery, send_payload

TEXT = "/whatsapp/1/message/text"
TEMPLATE = "/whatsapp/1/message/template"


@pytest.fixture(scope="module")
def celery(settings):
    return make_celery(settings)


@pytest.fixture
def pools():
    p = TenantPools(max_size=2)
    yield p
    p.close()


@pytest.fixture
def uow(pools):
    """A unit of work that publishes nothing: `released` shows what it would have published."""
    return UnitOfWork(pools, lambda publication: None)


def released(uow: UnitOfWork) -> list[int]:
    """The outbox rows whose sends committed on `uow` since the last look."""
    return [p.payload["outbound_id"] for p in uow.flush()]


def publish_sends(celery, tenant_id: str, outbound_ids: list[int], request_id: str | None) -> None:
    """The send tasks of committed outbox rows, as the unit of work publishes them after a commit."""
    for outbound_id in outbound_ids:
        enqueue(celery, TASK_SEND, send_payload(tenant_id, outbound_id, request_id))


def now() -> datetime:
    return datetime.now(timezone.utc)


def reply(db, tenants, tenant_id: str, text: str, *, hours_since_inbound: float = 1.0) -> tuple[str, list[int]]:
    """A new user who wrote `hours_since_inbound` ago, and the outbox rows of a reply to them (committed)."""
    phone = new_user()
    with db(tenant_id) as conn, conn.transaction():
        uid = factories.user(conn, phone=phone, last_inbound_at=now() - timedelta(hours=hours_since_inbound))["id"]
        ids = queue_reply(Transaction(conn, tenants.require(tenant_id)), user_id=uid, phone=phone, text=text,
                          source_message=None, request_id="req_delivery_test", now=now(),
                          last_inbound_at=now() - timedelta(hours=hours_since_inbound))
    return phone, ids


def queue_for(conn, tenants, tenant_id: str, uid: int, phone: str, text: str) -> list[int]:
    """Another message to a user who wrote 5 minutes ago, in the caller's transaction."""
    return queue_reply(Transaction(conn, tenants.require(tenant_id)), user_id=uid, phone=phone, text=text,
                       source_message=None, request_id=None, now=now(), last_inbound_at=now() - timedelta(minutes=5))


def sends_to(sandbox, phone: str, path: str | None = None) -> list[dict]:
    out = []
    for r in sandbox.requests(path=path):
        body = r["json"] if isinstance(r["json"], dict) else {}
        to = body.get("to") or ((body.get("messages") or [{}])[0].get("to"))
        if to == phone and r["path"] in (TEXT, TEMPLATE):
            out.append(r)
    return out


def rows_of(db, tenant_id: str, phone: str) -> list[dict]:
    with db(tenant_id) as conn:
        return conn.execute("SELECT * FROM outbound_messages WHERE to_number = %s ORDER BY id", (phone,)).fetchall()


def settled(db, tenant_id: str, phone: str, count: int, statuses=("sent",)) -> list[dict]:
    """Wait until the user's `count` outbox rows have all reached one of `statuses`."""
    def check():
        rows = rows_of(db, tenant_id, phone)
        return rows if len(rows) == count and all(r["status"] in statuses for r in rows) else None
    try:
        return wait_for(check, what=f"{count} outbox rows of {phone} in {statuses}")
    except AssertionError as exc:
        found = [(r["id"], r["part"], r["status"], r["reason"]) for r in rows_of(db, tenant_id, phone)]
        raise AssertionError(f"{exc}; rows: {found}") from None


NO_SESSION = {"groupId": 1, "groupName": "HANDSET_ERRORS", "id": 7010, "name": "EC_NO_SESSION",
              "description": "No active session with the user", "permanent": True}


# ---------------------------------------------------------------- retries

def test_500_then_429_then_200_is_sent_once_with_one_message_id(worker, sandbox, db, tenants, celery):
    phone = new_user()
    sandbox.script({"status": 500, "to": phone}, {"status": 429, "headers": {"Retry-After": "1"}, "to": phone},
                   {"status": 200, "to": phone})
    with db("alpha") as conn, conn.transaction():
        uid = factories.user(conn, phone=phone, last_inbound_at=now() - timedelta(minutes=5))["id"]
        ids = queue_reply(Transaction(conn, tenants.require("alpha")), user_id=uid, phone=phone,
                          text="Your table is booked.", source_message=None, request_id=None, now=now(), last_inbound_at=now() - timedelta(minutes=5))
    publish_sends(celery, "alpha", ids, "req_retry")
    [row] = settled(db, "alpha", phone, 1)
    posts = sends_to(sandbox, phone)
    assert [p["json"]["messageId"] for p in posts] == [row["message_id"]] * 3
    assert row["attempts"] == 3 and row["error"] is None
    assert posts[-1]["json"]["content"]["text"] == "Your table is booked."


@pytest.mark.parametrize("status, body, code", [
    (401, None, "UNAUTHORIZED"),
    (400, {"errorCode": "E400", "description": "Invalid destination", "violations": [{"property": "to"}]}, "E400"),
])
def test_a_client_error_is_not_retried_and_recorded_failed(worker, sandbox, db, tenants, celery, status, body, code):
    phone = new_user()
    sandbox.script({"status": status, "to": phone, **({"body": body} if body else {})})
    with db("alpha") as conn, conn.transaction():
        uid = factories.user(conn, phone=phone, last_inbound_at=now())["id"]
        ids = queue_reply(Transaction(conn, tenants.require("alpha")), user_id=uid, phone=phone, text="hello",
                          source_message=None, request_id=None, now=now(), last_inbound_at=now())
    publish_sends(celery, "alpha", ids, None)
    [row] = settled(db, "alpha", phone, 1, ("failed",))
    assert len(sends_to(sandbox, phone)) == 1 and row["attempts"] == 1
    assert row["error"]["code"] == code and row["error"]["http_status"] == status
    assert f"HTTP {status} {code}" in row["reason"]
    assert "test-infobip-key" not in row["reason"]


def test_retry_after_is_honoured_in_seconds_or_as_a_date():
    assert parse_retry_after("7") == 7.0
    when = datetime(2030, 1, 1, 12, 0, 30, tzinfo=timezone.utc)
    assert parse_retry_after("Tue, 01 Jan 2030 12:00:30 GMT", now=when - timedelta(seconds=30)) == 30.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert retry_delay(3, 7.0, base=2.0) == 7.0           # Infobip's wish wins over the backoff
    assert 0 < retry_delay(6, None, base=2.0) <= 64.0     # otherwise bounded exponential backoff


def test_send_retries_outlast_a_15_minute_infobip_outage_and_stay_bounded():
    """With the default base, a reply survives Infobip being down for 15 minutes, and is given up within the hour."""
    waits = [retry_delay(attempt, None, base=2.0) for attempt in range(1, MAX_ATTEMPTS)]
    assert 15 * 60 <= sum(waits) <= 60 * 60 and max(waits) <= 300
    # a short Retry-After on every 429 does not use the attempts up sooner
    assert sum(retry_delay(attempt, 1.0, base=2.0) for attempt in range(1, MAX_ATTEMPTS)) >= 15 * 60
    assert retry_base_seconds({"INFOBIP_RETRY_BASE_SECONDS": "0.05"}) == 0.05  # the tests' short schedule
    with pytest.raises(ConfigError):
        retry_base_seconds({"INFOBIP_RETRY_BASE_SECONDS": "soon"})


# ---------------------------------------------------------------- splitting

def long_text() -> str:
    sentences = [f"Sentence {i} tells the user something useful about the booking." for i in range(160)]
    paragraphs = [" ".join(sentences[i:i + 40]) for i in range(0, 160, 40)]
    return "\n\n".join(paragraphs)[:10_000]


def test_a_10000_character_reply_arrives_as_ordered_parts(worker, sandbox, db, tenants, celery):
    text = long_text()
    assert len(text) == 10_000
    phone, ids = reply(db, tenants, "alpha", text)
    sandbox.script({"status": 500, "to": phone})  # part 1 needs a retry: part 2 must still come after it
    publish_sends(celery, "alpha", ids, None)
    parts = len(split_text(text))
    assert parts >= 3
    rows = settled(db, "alpha", phone, parts)
    texts = [p["json"]["content"]["text"] for p in sends_to(sandbox, phone)]
    assert len(texts) == parts + 1 and texts[0] == texts[1]
    accepted = texts[1:]  # the first post of part 1 got the 500
    assert accepted == [r["body"] for r in rows] and [r["part"] for r in rows] == list(range(1, parts + 1))
    assert all(len(t) <= 4096 for t in accepted)
    assert " ".join(" ".join(accepted).split()) == " ".join(text.split())
    assert all(t.rstrip().endswith(".") for t in accepted[:-1])  # cut at sentence ends, never inside a word


def test_a_failed_part_stops_the_rest_and_says_why(worker, sandbox, db, tenants, celery):
    phone, ids = reply(db, tenants, "alpha", long_text())
    sandbox.script({"status": 403, "to": phone})
    publish_sends(celery, "alpha", ids, None)
    rows = settled(db, "alpha", phone, len(split_text(long_text())), ("failed", "not_sent"))
    assert [r["status"] for r in rows] == ["failed"] + ["not_sent"] * (len(rows) - 1)
    assert "part 1 of this reply failed" in rows[1]["reason"] and "403" in rows[2]["reason"]
    assert len(sends_to(sandbox, phone)) == 1


# ---------------------------------------------------------------- order across messages

def test_a_retried_reply_is_not_overtaken_by_the_next_reply(worker, sandbox, db, tenants, celery):
    """Two turns answered the same user; Infobip throttles the first answer: the user still reads them in order."""
    phone = new_user()
    with db("alpha") as conn:
        uid = factories.user(conn, phone=phone, last_inbound_at=now() - timedelta(minutes=5))["id"]
        with conn.transaction():
            first = queue_for(conn, tenants, "alpha", uid, phone, "First answer.")
        with conn.transaction():
            second = queue_for(conn, tenants, "alpha", uid, phone, "Second answer.")
    sandbox.script({"status": 429, "headers": {"Retry-After": "1"}, "to": phone})
    publish_sends(celery, "alpha", first + second, None)
    settled(db, "alpha", phone, 2)
    texts = [p["json"]["content"]["text"] for p in sends_to(sandbox, phone)]
    assert texts == ["First answer.", "First answer.", "Second answer."]  # the 429, its retry, then the next one


def test_messages_queued_at_the_same_moment_all_follow_the_message_before_them(worker, sandbox, db, tenants, celery):
    """A reply and a reminder written in two concurrent transactions both wait for (and follow) the earlier reply."""
    phone = new_user()
    with db("alpha") as conn:
        uid = factories.user(conn, phone=phone, last_inbound_at=now() - timedelta(minutes=5))["id"]
        with conn.transaction():
            first = queue_for(conn, tenants, "alpha", uid, phone, "One.")
    with db("alpha") as a, db("alpha") as b:
        with a.transaction():
            second = queue_for(a, tenants, "alpha", uid, phone, "Two.")
            with b.transaction():  # does not see "Two." yet: both pick "One." as the row to wait for
                third = queue_for(b, tenants, "alpha", uid, phone, "Three.")
    assert {r["prev_id"] for r in rows_of(db, "alpha", phone)[1:]} == set(first)
    sandbox.script({"status": 429, "headers": {"Retry-After": "1"}, "to": phone})
    publish_sends(celery, "alpha", first + second + third, None)
    settled(db, "alpha", phone, 3)
    texts = [p["json"]["content"]["text"] for p in sends_to(sandbox, phone)]
    assert texts[:2] == ["One.", "One."] and sorted(texts[2:]) == ["Three.", "Two."]


def test_a_failed_reply_does_not_hold_back_the_next_one(worker, sandbox, db, tenants, celery):
    """The first reply's part 1 is refused: the rest of that reply is dropped, the next reply is still sent (at
    once: nothing in the tests runs the 10-minute sweep)."""
    phone = new_user()
    with db("alpha") as conn:
        uid = factories.user(conn, phone=phone, last_inbound_at=now() - timedelta(minutes=5))["id"]
        with conn.transaction():
            first = queue_for(conn, tenants, "alpha", uid, phone, long_text())
        with conn.transaction():
            second = queue_for(conn, tenants, "alpha", uid, phone, "Sorry, one more thing.")
    sandbox.script({"status": 403, "to": phone})
    publish_sends(celery, "alpha", first + second, None)
    parts = len(split_text(long_text()))
    rows = settled(db, "alpha", phone, parts + 1, ("failed", "not_sent", "sent"))
    assert [r["status"] for r in rows] == ["failed"] + ["not_sent"] * (parts - 1) + ["sent"]
    texts = [p["json"]["content"]["text"] for p in sends_to(sandbox, phone)]
    assert len(texts) == 2 and texts[1] == "Sorry, one more thing."


# ---------------------------------------------------------------- answers that were lost

class LostAnswers:
    """Make recording Infobip's acceptance for one user fail like a dropped database connection (SQLSTATE 08006),
    `times` times (None: always): the post reached Infobip, its answer never reaches the outbox."""

    def __init__(self, db, tenant_id: str, phone: str, times: int | None):
        self.db, self.tenant_id, self.name = db, tenant_id, f"lose_{uuid.uuid4().hex[:8]}"
        limit = f"AND nextval('{self.name}') <= {int(times)}" if times is not None else ""
        with db(tenant_id) as conn:
            conn.execute(f"CREATE SEQUENCE {self.name}")
            conn.execute(f"""
                CREATE FUNCTION {self.name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF OLD.status = 'queued' AND NEW.status = 'sent' AND NEW.to_number = '{int(phone)}' {limit} THEN
                        RAISE EXCEPTION 'connection lost while recording the answer' USING ERRCODE = '08006';
                    END IF;
                    RETURN NEW;
                END $$""")
            conn.execute(f"CREATE TRIGGER {self.name} BEFORE UPDATE ON outbound_messages "
                         f"FOR EACH ROW EXECUTE FUNCTION {self.name}()")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with self.db(self.tenant_id) as conn:
            conn.execute(f"DROP TRIGGER {self.name} ON outbound_messages")
            conn.execute(f"DROP FUNCTION {self.name}()")
            conn.execute(f"DROP SEQUENCE {self.name}")


def test_a_post_whose_answer_was_lost_is_counted_and_posted_again_with_the_same_message_id(
        worker, sandbox, db, tenants, celery):
    phone, ids = reply(db, tenants, "alpha", "Your parcel has shipped.")
    with LostAnswers(db, "alpha", phone, times=1):
        publish_sends(celery, "alpha", ids, None)
        [row] = settled(db, "alpha", phone, 1)
    posts = sends_to(sandbox, phone)
    # at-least-once: Infobip got the message twice, with one messageId (whether it drops the repeat is unknown)
    assert [p["json"]["messageId"] for p in posts] == [row["message_id"]] * 2
    assert row["attempts"] == 2 and row["posting_at"] is not None


def test_answers_lost_again_and_again_end_in_a_bounded_number_of_posts(sandbox, db, tenants, uow):
    phone, ids = reply(db, tenants, "alpha", "Are you there?")
    alpha = tenants.require("alpha")
    with LostAnswers(db, "alpha", phone, times=None):
        for _ in range(3):
            with pytest.raises(psycopg.OperationalError):
                send_outbound(alpha, uow, client_for(alpha), ids[0], max_attempts=3)
        outcome = send_outbound(alpha, uow, client_for(alpha), ids[0], max_attempts=3)
    [row] = rows_of(db, "alpha", phone)
    assert outcome.status == "failed" and len(sends_to(sandbox, phone)) == 3
    assert row["status"] == "failed" and row["attempts"] == 3
    assert "gave up after 3 attempts" in row["reason"] and "lost" in row["reason"]


def test_a_row_another_task_is_posting_is_not_posted_again(sandbox, db, tenants, uow):
    phone, ids = reply(db, tenants, "alpha", "Just once.")
    alpha = tenants.require("alpha")
    with db("alpha") as other_task:
        assert outbound.try_lock(other_task, ids[0])
        assert send_outbound(alpha, uow, client_for(alpha), ids[0]).status == "busy"
        assert sends_to(sandbox, phone) == []
        outbound.unlock(other_task, ids[0])
    assert send_outbound(alpha, uow, client_for(alpha), ids[0]).status == "sent"
    assert send_outbound(alpha, uow, client_for(alpha), ids[0]).status == "skipped"
    assert len(sends_to(sandbox, phone)) == 1


def test_an_early_copy_of_a_retry_waits_for_its_time(sandbox, db, tenants, uow):
    """A send task that comes back before its retry is due (the broker's visibility timeout is shorter than an
    hour of Retry-After) posts nothing and waits out the rest."""
    phone, ids = reply(db, tenants, "alpha", "Not before my time.")
    alpha = tenants.require("alpha")
    with db("alpha") as conn:
        conn.execute("UPDATE outbound_messages SET attempts = 1, next_attempt_at = now() + interval '50 minutes' "
                     "WHERE id = %s", (ids[0],))
    outcome = send_outbound(alpha, uow, client_for(alpha), ids[0])
    assert outcome.status == "retry" and 49 * 60 < outcome.delay <= 50 * 60
    assert sends_to(sandbox, phone) == []
    with db("alpha") as conn:
        conn.execute("UPDATE outbound_messages SET next_attempt_at = now() WHERE id = %s", (ids[0],))
    assert send_outbound(alpha, uow, client_for(alpha), ids[0]).status == "sent"
    assert len(sends_to(sandbox, phone)) == 1


def test_split_prefers_paragraphs_then_sentences_then_words():
    assert split_text("One two.\n\nThree four five.", 20) == ["One two.", "Three four five."]
    assert split_text("One two. Three four five.", 20) == ["One two.", "Three four five."]
    assert split_text("alpha beta gamma delta", 12) == ["alpha beta", "gamma delta"]
    assert split_text("x" * 10, 4) == ["xxxx", "xxxx", "xx"]
    with pytest.raises(ValueError):
        split_text("   ")


# ---------------------------------------------------------------- the 24-hour window

@pytest.mark.clock
def test_a_reply_25_hours_after_the_last_message_goes_out_as_the_template(worker, sandbox, db, tenants, celery):
    phone, ids = reply(db, tenants, "beta", "Your bike is ready.\nPick it up today.", hours_since_inbound=25)
    publish_sends(celery, "beta", ids, None)
    [row] = settled(db, "beta", phone, 1)
    [post] = sends_to(sandbox, phone)
    assert post["path"] == TEMPLATE and row["kind"] == "template"
    [message] = post["json"]["messages"]
    assert message["messageId"] == row["message_id"] and message["from"] == "447000000002"
    assert message["content"] == {"templateName": "beta_reengage", "language": "en",
                                  "templateData": {"body": {"placeholders": ["Ada",
                                                                             "Your bike is ready. Pick it up today."]}}}


@pytest.mark.clock
def test_outside_the_window_without_a_template_the_reply_is_not_sent_with_the_reason(db, tenants):
    phone, ids = reply(db, tenants, "alpha", "Are you still there?", hours_since_inbound=25)
    assert ids == []
    [row] = rows_of(db, "alpha", phone)
    assert row["status"] == "not_sent" and "24-hour window" in row["reason"] and "template" in row["reason"]


@pytest.mark.clock
def test_a_session_error_report_falls_back_to_the_template_once(worker, sandbox, db, tenants, celery, client, uow):
    phone, ids = reply(db, tenants, "beta", "See you at 5pm.")
    publish_sends(celery, "beta", ids, None)
    [text_row] = settled(db, "beta", phone, 1)
    report = delivery_report(text_row["message_id"], phone, "UNDELIVERABLE", "UNDELIVERABLE_NOT_DELIVERED",
                             NO_SESSION)
    resp = client.post("/webhooks/infobip/status", json=report, headers={"X-Webhook-Token": "beta-own-token"})
    assert resp.status_code == 200, resp.get_json()
    rows = settled(db, "beta", phone, 2, ("sent", "undeliverable"))
    assert [r["kind"] for r in rows] == ["text", "template"] and rows[1]["fallback_of"] == text_row["id"]
    [template_post] = sends_to(sandbox, phone, TEMPLATE)
    assert template_post["json"]["messages"][0]["content"]["templateData"]["body"]["placeholders"][1] == \
        "See you at 5pm."
    beta = tenants.require("beta")
    # the same report again, and the template's own closed-window report: no second template, no loop
    receive_report(beta, uow, "delivery", report["results"][0])
    assert released(uow) == []
    again = delivery_report(rows[1]["message_id"], phone, "UNDELIVERABLE", "UNDELIVERABLE_NOT_DELIVERED",
                            NO_SESSION)["results"][0]
    receive_report(beta, uow, "delivery", again)
    assert released(uow) == []
    assert [r["status"] for r in rows_of(db, "beta", phone)] == ["undeliverable", "undeliverable"]


@pytest.mark.clock
def test_a_message_waiting_for_a_reply_that_falls_back_to_the_template_comes_after_the_template(
        sandbox, db, tenants, uow):
    """Part 1 of a long reply is accepted, then reported undeliverable (window closed) before the other parts went
    out: the reply goes out again as the template, and the user's next message still comes after it."""
    phone = new_user()
    beta = tenants.require("beta")
    with db("beta") as conn:
        uid = factories.user(conn, phone=phone, last_inbound_at=now() - timedelta(minutes=5))["id"]
        with conn.transaction():
            first = queue_for(conn, tenants, "beta", uid, phone, long_text())
        with conn.transaction():
            [second] = queue_for(conn, tenants, "beta", uid, phone, "And one more thing.")
    client = client_for(beta)
    assert send_outbound(beta, uow, client, first[0]).status == "sent"
    released(uow)  # part 2 of the reply (not published here)
    [part1] = [r for r in rows_of(db, "beta", phone) if r["id"] == first[0]]
    report = delivery_report(part1["message_id"], phone, "UNDELIVERABLE", "UNDELIVERABLE_NOT_DELIVERED", NO_SESSION)
    receive_report(beta, uow, "delivery", report["results"][0])
    [fallback] = released(uow)
    assert send_outbound(beta, uow, client, second).status == "waiting"
    send_outbound(beta, uow, client, fallback)
    assert released(uow) == [second]
    assert send_outbound(beta, uow, client, second).status == "sent"
    assert [p["path"] for p in sends_to(sandbox, phone)] == [TEXT, TEMPLATE, TEXT]
    assert sends_to(sandbox, phone)[-1]["json"]["content"]["text"] == "And one more thing."


def test_session_errors_are_recognised_by_code_or_words():
    assert is_session_error(NO_SESSION)
    assert is_session_error({"id": 131047, "name": "EC_REENGAGEMENT", "permanent": True,
                             "description": "Re-engagement message: more than 24 hours have passed"})
    assert not is_session_error({"id": 0, "name": "NO_ERROR", "description": "No Error", "permanent": False})
    assert not is_session_error({"id": 5, "name": "EC_ABSENT_SUBSCRIBER", "permanent": True,
                                 "description": "Absent subscriber"})


def test_templates_are_validated_naming_tenant_and_field(settings):
    from shared.config.tenants import parse_tenants

    def tenant(templates):
        return {"tenants": [{"tenant_id": "shop", "waba_number": "+15550009999",
                             "db_dsn": "postgresql://u@127.0.0.1/shop", "templates": templates}]}

    good = parse_tenants(tenant({"reengage": {"name": "hello_again", "language": "en_GB",
                                              "placeholders": ["{name}", "{business_name}: {text}"]}}), settings, {})
    assert good.require("shop").templates["reengage"].language == "en_GB"
    for templates, field in [({"reengage": {"name": "Hello Again", "language": "en"}}, "templates.reengage.name"),
                             ({"reengage": {"name": "h", "language": "en", "placeholders": ["{phone}"]}},
                              "templates.reengage.placeholders[0]"),
                             ({"reengage": {"name": "h", "language": "en", "header": "x"}}, "templates.reengage"),
                             ({"reengage": {"name": "h"}}, "templates.reengage.language")]:
        with pytest.raises(ConfigError) as err:
            parse_tenants(tenant(templates), settings, {})
        assert "tenant shop" in str(err.value) and field in str(err.value)


# ---------------------------------------------------------------- reports

def test_a_report_that_arrives_before_its_message_is_applied_later(worker, sandbox, db, tenants, celery, client):
    phone = new_user()
    mid = new_message_id("alpha")
    resp = client.post("/webhooks/infobip/status", json=delivery_report(mid, phone, "DELIVERED", "DELIVERED_TO_HANDSET"),
                       headers=AUTH)
    assert resp.status_code == 200 and resp.get_json()["accepted"] == 1
    with db("alpha") as conn:
        wait_for(lambda: conn.execute("SELECT 1 FROM pending_reports WHERE message_id = %s", (mid,)).fetchone(),
                 what="report kept")
        uid = factories.user(conn, phone=phone, last_inbound_at=now())["id"]
        oid = outbound.create(conn, message_id=mid, user_id=uid, to_number=phone, body="hi",
                              content=text_body(sender="447000000001", to=phone, text="hi", message_id=mid))
    publish_sends(celery, "alpha", [oid], None)
    [row] = settled(db, "alpha", phone, 1, ("delivered",))
    assert row["delivered_at"] is not None and len(sends_to(sandbox, phone)) == 1
    with db("alpha") as conn:
        assert conn.execute("SELECT 1 FROM pending_reports WHERE message_id = %s", (mid,)).fetchone() is None


# ---------------------------------------------------------------- reminders

@pytest.mark.clock
def test_two_dispatchers_send_each_of_100_due_reminders_exactly_once(worker, sandbox, db, celery):
    phone = new_user()
    with db("alpha") as conn, conn.transaction():
        uid = factories.user(conn, phone=phone, last_inbound_at=now() - timedelta(minutes=30))["id"]
        factories.reminders(conn, uid, 100, text=lambda i: f"reminder {i}",
                            due_at=lambda i: now() - timedelta(minutes=1 if i % 2 else 90))
    enqueue(celery, TASK_DISPATCH_REMINDERS, {})
    enqueue(celery, TASK_DISPATCH_REMINDERS, {})
    rows = wait_for(lambda: (lambda r: r if len(r) == 100 and all(x["status"] == "sent" for x in r) else None)(
        rows_of(db, "alpha", phone)), timeout=60, what="100 reminders sent")
    texts = sorted(p["json"]["content"]["text"] for p in sends_to(sandbox, phone))
    assert len(texts) == 100 and len({r["reminder_id"] for r in rows}) == 100
    assert texts == sorted(f"⏰ Reminder{' (late)' if i % 2 == 0 else ''}: reminder {i}" for i in range(100))


@pytest.mark.clock
def test_a_reminder_outside_the_window_goes_out_as_the_template(worker, sandbox, db, celery):
    phone = new_user()
    with db("beta") as conn:
        uid = factories.user(conn, phone=phone, last_inbound_at=now() - timedelta(days=2), name=None)["id"]
        rid = factories.reminder(conn, uid, text="service your bike", due_at=now() - timedelta(hours=3))["id"]
    enqueue(celery, TASK_DISPATCH_REMINDERS, {})
    [row] = settled(db, "beta", phone, 1)
    [post] = sends_to(sandbox, phone)
    assert row["reminder_id"] == rid and post["path"] == TEMPLATE
    assert post["json"]["messages"][0]["content"]["templateData"]["body"]["placeholders"] == \
        ["-", "⏰ Reminder (late): service your bike"]


def test_a_send_whose_task_was_lost_is_published_again_by_the_sweep(worker, sandbox, db, tenants, celery):
    phone, ids = reply(db, tenants, "alpha", "Lost and found.")
    with db("alpha") as conn:  # committed, but its task never reached Redis (a crash between commit and publish)
        conn.execute("UPDATE outbound_messages SET next_attempt_at = now() - interval '11 minutes' WHERE id = %s",
                     (ids[0],))
    enqueue(celery, TASK_RECOVER, {})
    [row] = settled(db, "alpha", phone, 1)
    assert [p["json"]["messageId"] for p in sends_to(sandbox, phone)] == [row["message_id"]]


# ---------------------------------------------------------------- courtesy calls

def test_twenty_sending_threads_share_one_client_without_throwing_connections_away(sandbox, caplog):
    """The outbound worker's 20 threads share a tenant's client: every connection is kept for reuse."""
    from helpers import INFOBIP_KEY

    phone, threads = new_user(), 20
    client = InfobipClient(sandbox.url, INFOBIP_KEY)
    start = threading.Barrier(threads)

    def post(i: int) -> bool:
        start.wait()
        return all(client.send(TEXT, text_body(sender="447000000001", to=phone, text=f"{i}.{j}",
                                               message_id=f"pool-{phone}-{i}-{j}")).ok for j in range(5))

    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        with ThreadPoolExecutor(threads) as pool:
            assert all(pool.map(post, range(threads)))
    assert len(sends_to(sandbox, phone)) == threads * 5
    assert not [r.getMessage() for r in caplog.records if "pool is full" in r.getMessage()]


def test_mark_read_and_typing_reach_infobip_and_never_raise(sandbox):
    from helpers import INFOBIP_KEY

    phone = new_user()
    client = InfobipClient(sandbox.url, INFOBIP_KEY)
    assert client.mark_read("447000000001", f"ib-{phone}") is True
    assert client.typing("447000000001", phone) is True
    paths = [r["path"] for r in sandbox.requests() if phone in r["path"] or phone in str(r["json"])]
    assert paths == [f"/whatsapp/1/senders/447000000001/message/ib-{phone}/read", "/whatsapp/1/events"]
    typing = [r for r in sandbox.requests(path="/whatsapp/1/events") if phone in str(r["json"])][0]["json"]
    assert typing == {"events": [{"sender": "447000000001", "destinations": [{"to": phone}],
                                  "content": {"type": "TYPING_INDICATOR"}}]}
    assert InfobipClient(sandbox.url, "wrong-key").mark_read("447000000001", "x") is False
    dead = InfobipClient("http://127.0.0.1:9", INFOBIP_KEY)
    assert dead.mark_read("447000000001", "x") is False and dead.typing("447000000001", phone) is False
