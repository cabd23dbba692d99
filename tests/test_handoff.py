"""Human handoff and opt-out (issue 12), on real processes: gunicorn, the Celery worker, Postgres, Redis, the Infobip
sandbox, the fake OpenAI server (tenant gamma) and, here, the business's webhook receiver on a local port."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
from werkzeug.wrappers import Request, Response

from devtools.localserver import LocalServer
from helpers import AUTH, HANDOFF_SECRET, NUMBERS, inbound, new_user, texts_to, wait_for, wait_texts
from shared.conversation.turn import DEFAULT_APOLOGY
from shared.db.pools import TenantPools
from shared.db.unit_of_work import UnitOfWork
from shared.handoff.operator import SendRefused, send_as_operator
from shared.handoff.state import BOT, HUMAN, OPTED_OUT, conversation_state, hand_back
from shared.queueing.tasks import TASK_DISPATCH_REMINDERS, TASK_RELEASE_IDLE_HANDOFFS, enqueue, make_celery

GAMMA = NUMBERS["gamma"]


class HookReceiver(LocalServer):
    """The business's webhook: records every request (headers and raw body); answers 500 `fail_next` times."""

    thread_name = "handoff-hook"

    def __init__(self, port: int):
        super().__init__(port=port)
        self.received: list[dict] = []
        self.fail_next = 0
        self._lock = threading.Lock()

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        with self._lock:
            self.received.append({"path": request.path, "headers": dict(request.headers),
                                  "body": request.get_data()})
            failing, self.fail_next = self.fail_next > 0, max(0, self.fail_next - 1)
        return Response("no" if failing else "ok", status=500 if failing else 200)(environ, start_response)

    def events_for(self, phone: str) -> list[dict]:
        with self._lock:
            return [r for r in self.received if json.loads(r["body"])["user"]["phone"] == phone]


@pytest.fixture(scope="module")
def hook(stack_env):
    server = HookReceiver(int(stack_env["HANDOFF_HOOK_PORT"])).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def celery(settings):
    return make_celery(settings)


@pytest.fixture
def uow(celery):
    """A unit of work as the admin API would use: what commits is published to the real broker."""
    pools = TenantPools(max_size=2)
    yield UnitOfWork(pools, lambda p: enqueue(celery, p.task, p.payload, p.countdown))
    pools.close()


def say(web: str, user: str, text: str, when: datetime | None = None) -> str:
    body = inbound(GAMMA, user, {"type": "TEXT", "text": text}, received_at=when)
    assert requests.post(f"{web}/webhooks/infobip", json=body, headers=AUTH, timeout=10).status_code == 200
    return body["results"][0]["messageId"]


def user_row(db, phone: str) -> dict:
    with db("gamma") as conn:
        return conn.execute("SELECT * FROM users WHERE phone = %s", (phone,)).fetchone()


def events(db, phone: str) -> list[tuple]:
    with db("gamma") as conn:
        return [(r["kind"], r["actor"], r["reason"]) for r in conn.execute(
            "SELECT e.* FROM conversation_events e JOIN users u ON u.id = e.user_id WHERE u.phone = %s ORDER BY e.id",
            (phone,))]


def statuses(db, phone: str) -> list[tuple]:
    with db("gamma") as conn:
        return [(r["body"], r["status"]) for r in conn.execute(
            "SELECT m.body, m.status FROM messages m JOIN users u ON u.id = m.user_id "
            "WHERE u.phone = %s AND m.role = 'user' ORDER BY m.id", (phone,))]


def verified(request: dict) -> dict:
    """The body of a webhook request whose signature is right (checked here independently of our code)."""
    timestamp = request["headers"]["X-Wabot-Timestamp"]
    expected = "sha256=" + hmac.new(HANDOFF_SECRET.encode(), timestamp.encode() + b"." + request["body"],
                                    hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request["headers"]["X-Wabot-Signature"], expected)
    assert abs(time.time() - int(timestamp)) < 120
    return json.loads(request["body"])


def settle(seconds: float = 2.0) -> None:
    time.sleep(seconds)


NOTICE_TO_HUMAN = "I'm handing you over to a person from our team. They'll answer you here shortly."
NOTICE_TO_BOT = "You're talking to the assistant again. How can I help?"


@pytest.mark.parametrize("ask", ["can I talk to a person?", "quiero hablar con una persona",
                                 "ich möchte mit einem Menschen sprechen"])
def test_asking_for_a_person_hands_the_conversation_over(web, worker, sandbox, hook, db, ask):
    user = new_user()
    hook.fail_next = 1  # the business's server fails once: the webhook is retried, each attempt recorded
    say(web, user, ask)
    assert wait_texts(sandbox, user, 1, "the handoff notice") == [NOTICE_TO_HUMAN]
    assert user_row(db, user)["state"] == HUMAN
    assert events(db, user) == [("handoff", "user", "the user asked for a person")]
    delivered = wait_for(lambda: len(hook.events_for(user)) >= 2 and hook.events_for(user), 30,
                         what="the webhook, retried")
    bodies = [verified(r) for r in delivered]
    assert bodies[-1]["event"] == "handoff" and bodies[-1]["user"]["phone"] == user
    assert bodies[-1]["actor"] == "user" and bodies[-1]["tenant_id"] == "gamma"
    with db("gamma") as conn:
        attempts = conn.execute("SELECT a.ok, a.http_status FROM handoff_webhook_attempts a JOIN conversation_events "
                                "e ON e.id = a.event_id JOIN users u ON u.id = e.user_id WHERE u.phone = %s "
                                "ORDER BY a.attempt", (user,)).fetchall()
    assert [(a["ok"], a["http_status"]) for a in attempts] == [(False, 500), (True, 200)]


def test_a_person_answers_in_order_and_the_bot_reads_it_after_the_hand_back(web, worker, sandbox, hook, db, uow,
                                                                             tenants, fake_openai):
    user = new_user()
    say(web, user, "can I talk to a person?")
    wait_texts(sandbox, user, 1, "the handoff notice")
    for text in ("are you there?", "my order 4711 is late", "hello??"):
        say(web, user, text)
    wait_for(lambda: [s for _, s in statuses(db, user)] == ["held"] * 4, 30, what="the messages held")
    settle()
    assert texts_to(sandbox, user) == [NOTICE_TO_HUMAN]  # no bot reply while a person handles it
    gamma, user_id = tenants.require("gamma"), user_row(db, user)["id"]
    with uow.transaction(gamma) as tx:
        first = send_as_operator(tx, user_id, "anna", "Hi, Anna here: your order 4711 ships tomorrow.",
                                 datetime.now(timezone.utc))
        second = send_as_operator(tx, user_id, "anna", "Anything else?", datetime.now(timezone.utc))
    uow.flush()
    assert wait_texts(sandbox, user, 3, "the operator's messages") == [
        NOTICE_TO_HUMAN, "Hi, Anna here: your order 4711 ships tomorrow.", "Anything else?"]
    with db("gamma") as conn:
        rows = conn.execute("SELECT o.status, m.role, m.operator_id FROM outbound_messages o JOIN messages m "
                            "ON m.id = o.source_message WHERE o.id = ANY(%s) ORDER BY o.id", ([first, second],))
        assert [(r["role"], r["operator_id"]) for r in rows] == [("operator", "anna")] * 2
    with uow.transaction(gamma) as tx:
        assert hand_back(tx, user_id, by="operator:anna", reason="solved") is True
        assert hand_back(tx, user_id, by="operator:anna", reason="twice") is False
    uow.flush()
    wait_texts(sandbox, user, 4, "the hand-back notice")
    say(web, user, "thanks, when does it ship?")
    replies = wait_texts(sandbox, user, 5, "the bot's answer")
    assert replies[3] == NOTICE_TO_BOT and len(replies) == 5
    prompt = [r["json"]["messages"] for r in fake_openai.requests if r["path"] == "/v1/chat/completions"
              and r["json"]["messages"][-1].get("content") == "thanks, when does it ship?"][-1]
    assert {"role": "assistant", "content": "Hi, Anna here: your order 4711 ships tomorrow."} in prompt
    assert [e[:2] for e in events(db, user)] == [("handoff", "user"), ("handback", "operator:anna")]
    wait_for(lambda: [verified(r)["event"] for r in hook.events_for(user)] == ["handoff", "handback"], 30,
             what="both webhooks")


def test_an_idle_person_gives_the_conversation_back_to_the_bot(web, worker, sandbox, hook, db):
    user = new_user()
    say(web, user, "posso falar com um atendente?")
    wait_texts(sandbox, user, 1, "the handoff notice")
    with db("gamma") as conn:  # gamma's handoff.idle_minutes is 30: the switch happened long ago
        conn.execute("UPDATE users SET state_changed_at = now() - interval '31 minutes' WHERE phone = %s", (user,))
    say(web, user, "hello")
    replies = wait_texts(sandbox, user, 3, "the notice and the bot's answer")
    assert replies[1] == NOTICE_TO_BOT and len(replies) == 3
    assert [e[:2] for e in events(db, user)] == [("handoff", "user"), ("handback", "system")]
    assert statuses(db, user)[-1] == ("hello", "answered")


def test_the_beat_hands_an_idle_conversation_back_without_waiting_for_the_user(web, worker, sandbox, hook, db,
                                                                               settings):
    user = new_user()
    say(web, user, "ich möchte mit einem Menschen sprechen")
    wait_texts(sandbox, user, 1, "the handoff notice")
    with db("gamma") as conn:
        conn.execute("UPDATE users SET state_changed_at = now() - interval '31 minutes' WHERE phone = %s", (user,))
    enqueue(make_celery(settings), TASK_RELEASE_IDLE_HANDOFFS, {})
    replies = wait_texts(sandbox, user, 2, "the notice that the bot is back")
    assert replies[1] == NOTICE_TO_BOT
    assert [e[:2] for e in events(db, user)] == [("handoff", "user"), ("handback", "system")]


STOP_CONFIRMATION = "You won't get any more messages from us. Send START to receive messages again."
START_CONFIRMATION = "Welcome back! You'll get our messages again. Send STOP to stop them."


def _due_reminder(db, phone: str, text: str) -> int:
    with db("gamma") as conn:
        return conn.execute("INSERT INTO reminders (user_id, text, due_at) SELECT id, %s, now() - interval '1 minute' "
                            "FROM users WHERE phone = %s RETURNING id", (text, phone)).fetchone()["id"]


def _reminder(db, reminder_id: int) -> dict:
    with db("gamma") as conn:
        return conn.execute("SELECT r.status, o.status AS send_status, o.reason FROM reminders r LEFT JOIN "
                            "outbound_messages o ON o.id = r.outbound_id WHERE r.id = %s", (reminder_id,)).fetchone()


def _operator_says(uow, tenants, user_id: int, text: str) -> tuple[int | None, str | None]:
    """(outbox row, refusal reason) of an operator message, the refusal's record kept (caught inside the tx)."""
    with uow.transaction(tenants.require("gamma")) as tx:
        try:
            return send_as_operator(tx, user_id, "op7", text, datetime.now(timezone.utc)), None
        except SendRefused as refused:
            return refused.outbound_id, refused.reason


def test_stop_silences_everything_until_start(web, worker, sandbox, db, uow, tenants, celery):
    user = new_user()
    say(web, user, "hello")
    first = wait_texts(sandbox, user, 1, "the first reply")[0]
    say(web, user, "Stop")
    assert wait_texts(sandbox, user, 2, "the confirmation")[1] == STOP_CONFIRMATION
    row = user_row(db, user)
    assert row["state"] == OPTED_OUT
    assert events(db, user) == [("opt_out", "user", "keyword STOP")]
    reminder = _due_reminder(db, user, "call mom")
    enqueue(celery, TASK_DISPATCH_REMINDERS, {})
    wait_for(lambda: _reminder(db, reminder)["status"] != "pending", 30, what="the reminder dispatched")
    assert dict(_reminder(db, reminder)) == {"status": "not_sent", "send_status": "not_sent", "reason": "opted_out"}
    oid, refused = _operator_says(uow, tenants, row["id"], "are you still there?")
    uow.flush()
    assert refused == "opted_out"
    with db("gamma") as conn:
        assert conn.execute("SELECT status, reason FROM outbound_messages WHERE id = %s", (oid,)).fetchone() == {
            "status": "not_sent", "reason": "opted_out"}
    say(web, user, "what's up?")
    say(web, user, "STOP")  # again: no second confirmation
    wait_for(lambda: [s for _, s in statuses(db, user)][2:] == ["opted_out", "opted_out"], 30, what="stored")
    settle()
    assert texts_to(sandbox, user) == [first, STOP_CONFIRMATION]

    say(web, user, "start")
    assert wait_texts(sandbox, user, 3, "the start confirmation")[2] == START_CONFIRMATION
    assert [e[0] for e in events(db, user)] == ["opt_out", "opt_in"]
    reminder = _due_reminder(db, user, "water the plants")
    enqueue(celery, TASK_DISPATCH_REMINDERS, {})
    wait_texts(sandbox, user, 4, "the reminder")
    assert _operator_says(uow, tenants, row["id"], "glad you're back")[1] is None
    uow.flush()
    assert wait_texts(sandbox, user, 5, "the operator's message")[3:] == ["⏰ Reminder: water the plants",
                                                                           "glad you're back"]


FAILING_ASK = "what do I have scheduled this week?"


def fail_next_turn(fake_openai) -> None:
    """The model's first call works (a tool call), the second is refused outright (HTTP 400): the turn gives up."""
    fake_openai.script({"tool_calls": [{"name": "list_events", "arguments": {}}]}, {"status": 400})


def test_two_failures_in_a_row_hand_the_conversation_to_a_person(web, worker, sandbox, db, fake_openai, hook):
    user = new_user()
    fail_next_turn(fake_openai)
    say(web, user, FAILING_ASK)
    assert wait_texts(sandbox, user, 1, "the first apology") == [DEFAULT_APOLOGY]
    assert user_row(db, user)["state"] == BOT
    fail_next_turn(fake_openai)
    say(web, user, FAILING_ASK)
    assert wait_texts(sandbox, user, 3, "the second apology and the notice") == [
        DEFAULT_APOLOGY, DEFAULT_APOLOGY, NOTICE_TO_HUMAN]
    assert user_row(db, user)["state"] == HUMAN
    assert events(db, user) == [("handoff", "bot", "the bot failed 2 times in a row")]


def test_a_success_between_failures_starts_the_count_again(web, worker, sandbox, db, fake_openai):
    user = new_user()
    fail_next_turn(fake_openai)
    say(web, user, FAILING_ASK)
    wait_texts(sandbox, user, 1, "the apology")
    say(web, user, "hello")
    wait_texts(sandbox, user, 2, "the answer")
    fail_next_turn(fake_openai)
    say(web, user, FAILING_ASK)
    wait_texts(sandbox, user, 3, "the second apology")
    settle()
    assert user_row(db, user)["state"] == BOT and len(texts_to(sandbox, user)) == 3


def test_the_state_is_read_through_the_repository(db, tenants):
    with db("gamma") as conn:
        assert conversation_state(conn, -1) == BOT


def test_a_message_queued_before_the_opt_out_is_not_posted_after_it(tenants, sandbox, db):
    """The send refuses too: a reply still queued when the user opted out is recorded `not_sent` (opted_out), and
    only the confirmation goes."""
    from shared.db import users
    from shared.delivery.outbox import client_for, queue_reply, send_outbound
    from shared.handoff.state import opt_out

    gamma, phone, now = tenants.require("gamma"), new_user(), datetime.now(timezone.utc)
    pools = TenantPools(max_size=2)
    uow = UnitOfWork(pools, lambda publication: None)  # sends are run by hand below
    try:
        with uow.transaction(gamma) as tx:
            user_id = users.upsert_user(tx.conn, phone, "Early", now)
            early = queue_reply(tx, user_id=user_id, phone=phone, text="an answer on its way", source_message=None,
                                request_id=None, now=now, last_inbound_at=now)
        with uow.transaction(gamma) as tx:
            assert opt_out(tx, user_id, "STOP") is True
            assert opt_out(tx, user_id, "STOP") is False
        confirmation = [p.payload["outbound_id"] for p in uow.flush()][-1]
        client = client_for(gamma)
        assert send_outbound(gamma, uow, client, early[0]).status == "skipped"
        assert send_outbound(gamma, uow, client, confirmation).status == "sent"
    finally:
        pools.close()
    with db("gamma") as conn:
        assert conn.execute("SELECT status, reason FROM outbound_messages WHERE id = %s", (early[0],)).fetchone() \
            == {"status": "not_sent", "reason": "opted_out"}
    assert texts_to(sandbox, phone) == [STOP_CONFIRMATION]
