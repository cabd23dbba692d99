"""Delivery you can trust, the inbound half: deduplication, debounce, per-user turns, crash safety, rate limits.
Every test runs on real processes: gunicorn or the Flask app, Redis, Celery worker processes, Postgres."""
from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import requests

import factories
from conftest import start_worker
from helpers import AUTH, NUMBERS, inbound, new_user, wait_for
from shared.conversation.ratelimit import NOTICE


def texts_to(sandbox, user):
    return [r["json"]["content"]["text"] for r in sandbox.requests(path="/whatsapp/1/message/text")
            if r["json"]["to"] == user]


def settle(seconds: float = 1.5) -> None:
    """Give a wrongly duplicated reply the time to show up before asserting there is only one."""
    time.sleep(seconds)


def test_fifty_copies_of_one_webhook_give_one_reply(web, worker, sandbox, db):
    user = new_user()
    body = inbound(NUMBERS["alpha"], user, {"type": "TEXT", "text": "hello, only once please"})
    with ThreadPoolExecutor(max_workers=25) as pool:
        answers = list(pool.map(lambda _: requests.post(f"{web}/webhooks/infobip", json=body, headers=AUTH,
                                                        timeout=10), range(50)))
    assert all(a.status_code == 200 for a in answers)
    assert sum(a.json()["accepted"] for a in answers) == 1
    assert sum(a.json()["duplicates"] for a in answers) == 49
    wait_for(lambda: texts_to(sandbox, user), what="the reply")
    settle()
    assert len(texts_to(sandbox, user)) == 1
    with db("alpha") as conn:
        n = conn.execute("SELECT count(*) AS n FROM messages WHERE infobip_message_id = %s",
                         (body["results"][0]["messageId"],)).fetchone()["n"]
    assert n == 1


def test_the_same_message_enqueued_twice_anyway_is_answered_once(settings, tenants, worker, sandbox, db):
    """The ingress filter can be bypassed (a claim expired, a second ingress): the database still guards."""
    from shared.queueing.tasks import TASK_HANDLE_INBOUND, enqueue, make_celery

    user = new_user()
    result = inbound(NUMBERS["alpha"], user, {"type": "TEXT", "text": "twice through the queue"})["results"][0]
    celery = make_celery(settings)
    for _ in range(5):
        enqueue(celery, TASK_HANDLE_INBOUND, {"tenant_id": "alpha", "result": result, "request_id": "req_dup"})
    wait_for(lambda: texts_to(sandbox, user), what="the reply")
    settle()
    assert len(texts_to(sandbox, user)) == 1


def test_a_burst_is_answered_once_by_a_turn_that_sees_every_message(client, worker, sandbox, db):
    user = new_user()
    words = ["one", "two", "three", "four", "five"]
    for w in words:  # beta has the default 1500 ms debounce window: the burst spans a sixth of it, so a slow
        # machine still stores every message inside the window
        assert client.post("/webhooks/infobip", json=inbound(NUMBERS["beta"], user, {"type": "TEXT", "text": w}),
                           headers=AUTH).status_code == 200
        time.sleep(0.05)
    reply = wait_for(lambda: texts_to(sandbox, user), timeout=30, what="the reply")
    settle(2.0)
    assert len(texts_to(sandbox, user)) == 1
    assert reply[0] == "You said: " + "\n".join(words)  # one turn, all five messages, in order
    with db("beta") as conn:
        rows = conn.execute("SELECT m.role, m.status FROM messages m JOIN users u ON u.id = m.user_id "
                            "WHERE u.phone = %s ORDER BY m.id", (user,)).fetchall()
        usage = conn.execute("SELECT count(*) AS n FROM llm_usage l JOIN users u ON u.id = l.user_id "
                             "WHERE u.phone = %s", (user,)).fetchone()["n"]
    assert [r["status"] for r in rows if r["role"] == "user"] == ["answered"] * 5
    assert [r["role"] for r in rows].count("assistant") == 1
    assert usage >= 1


def test_two_users_turns_run_side_by_side(client, worker, sandbox, fake_openai):
    """While one user's turn waits on a slow LLM, another user's turn is already being answered."""
    first, second = new_user(), new_user()
    fake_openai.script({"delay": 6.0, "content": "slow answer"})
    client.post("/webhooks/infobip", json=inbound(NUMBERS["gamma"], first, {"type": "TEXT", "text": "hi slow"}),
                headers=AUTH)
    wait_for(lambda: any(r["json"]["messages"][-1].get("content") == "hi slow" for r in fake_openai.requests
                         if r["path"] == "/v1/chat/completions"), what="the slow turn to reach the LLM")
    client.post("/webhooks/infobip", json=inbound(NUMBERS["gamma"], second, {"type": "TEXT", "text": "hi fast"}),
                headers=AUTH)
    wait_for(lambda: texts_to(sandbox, second), timeout=30, what="the second user's reply")
    assert texts_to(sandbox, first) == [], "the second user had to wait for the first user's turn"
    wait_for(lambda: texts_to(sandbox, first), timeout=30, what="the slow reply")
    assert texts_to(sandbox, first) == ["slow answer"]


def test_a_worker_killed_during_the_llm_call_loses_nothing(stack_env, tenants, sandbox, fake_openai, data_dir, db,
                                                           settings):
    """SIGKILL mid-turn: after a new worker starts, the user gets exactly one reply."""
    from ingress.app import create_app
    from devtools.devstack import start_redis

    broker = start_redis(data_dir / f"redis-kill-{os.getpid()}")  # its own broker: only our workers take the task
    env = {**stack_env, "REDIS_URL": broker.url, "CELERY_VISIBILITY_TIMEOUT": "3", "CELERY_RESTORE_INTERVAL": "1"}
    first = second = None
    try:
        first = start_worker(env, data_dir / "kill-worker-1.log", name="doomed")
        user = new_user()
        fake_openai.script({"delay": 30.0, "content": "the answer that never arrives"})
        app = create_app(replace(settings, redis_url=broker.url), tenants, configure_logs=False)
        body = inbound(NUMBERS["gamma"], user, {"type": "TEXT", "text": "please survive a crash"})
        assert app.test_client().post("/webhooks/infobip", json=body, headers=AUTH).status_code == 200
        wait_for(lambda: any(r["json"]["messages"][-1].get("content") == "please survive a crash"
                             for r in fake_openai.requests if r["path"] == "/v1/chat/completions"),
                 what="the turn to reach the LLM")
        os.killpg(first.popen.pid, signal.SIGKILL)
        first.popen.wait(10)
        with db("gamma") as conn:
            status = conn.execute("SELECT status FROM messages WHERE infobip_message_id = %s",
                                  (body["results"][0]["messageId"],)).fetchone()["status"]
        assert status == "received"  # the killed turn committed nothing
        second = start_worker(env, data_dir / "kill-worker-2.log", name="survivor")
        wait_for(lambda: texts_to(sandbox, user), timeout=60, what="the reply after the restart")
        settle(3.0)
        replies = texts_to(sandbox, user)
        assert len(replies) == 1 and replies[0] != "the answer that never arrives"
        with db("gamma") as conn:
            rows = conn.execute("SELECT m.role, m.status FROM messages m JOIN users u ON u.id = m.user_id "
                                "WHERE u.phone = %s", (user,)).fetchall()
        assert sorted((r["role"], r["status"]) for r in rows) == [("assistant", "stored"), ("user", "answered")]
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.stop()
        broker.stop()


def test_a_flooding_user_gets_one_notice_and_the_rest_is_stored_unanswered(client, worker, sandbox, db):
    user = new_user()
    ids = []
    for i in range(8):  # delta allows 5 messages a minute per user
        body = inbound(NUMBERS["delta"], user, {"type": "TEXT", "text": f"flood {i}"})
        ids.append(body["results"][0]["messageId"])
        assert client.post("/webhooks/infobip", json=body, headers=AUTH).status_code == 200
    with db("delta") as conn:
        rows = wait_for(lambda: (lambda r: r if len(r) == 8 else None)(conn.execute(
            "SELECT infobip_message_id, status FROM messages WHERE infobip_message_id = ANY(%s)", (ids,)
        ).fetchall()), what="all eight stored")
    statuses = {r["infobip_message_id"]: r["status"] for r in rows}
    assert [statuses[i] for i in ids].count("rate_limited") == 3
    wait_for(lambda: NOTICE in texts_to(sandbox, user), what="the notice")
    settle()
    assert texts_to(sandbox, user).count(NOTICE) == 1


def test_a_voice_note_is_transcribed_where_the_provider_can(client, worker, sandbox, fake_openai, db):
    """Gamma's provider is OpenAI (the fake server transcribes the uploaded bytes); alpha's mock cannot."""
    user = new_user()
    url = sandbox.add_media(f"voice-{user}", b"Remember I have a haircut tomorrow at 3 PM", "audio/ogg",
                            sender=NUMBERS["gamma"])
    body = inbound(NUMBERS["gamma"], user, {"type": "VOICE", "url": url})
    assert client.post("/webhooks/infobip", json=body, headers=AUTH).status_code == 200
    reply = wait_for(lambda: texts_to(sandbox, user), timeout=30, what="the reply to the voice note")
    assert reply == ["I've saved your haircut for tomorrow at 3 PM as an event."]
    assert any(r["path"] == "/v1/audio/transcriptions" and r["json"]["model"] == "whisper-1"
               for r in fake_openai.requests)
    with db("gamma") as conn:
        stored = conn.execute("SELECT body, message_type FROM messages WHERE infobip_message_id = %s",
                              (body["results"][0]["messageId"],)).fetchone()
    assert stored["message_type"] == "VOICE" and "haircut" in stored["body"]


def test_a_turn_that_cannot_succeed_ends_with_an_apology_not_silence(client, worker, sandbox, fake_openai, db):
    """The model refuses the request outright (HTTP 400, not retryable): the user is told, nothing loops."""
    from shared.conversation.turn import DEFAULT_APOLOGY

    user = new_user()
    # the first model call works (a tool call), the second is refused: the turn fails half way
    fake_openai.script({"tool_calls": [{"name": "list_events", "arguments": {}}]}, {"status": 400})
    body = inbound(NUMBERS["gamma"], user, {"type": "TEXT", "text": "what do I have scheduled this week?"})
    assert client.post("/webhooks/infobip", json=body, headers=AUTH).status_code == 200
    assert wait_for(lambda: texts_to(sandbox, user), timeout=30, what="the apology") == [DEFAULT_APOLOGY]
    with db("gamma") as conn:
        status = conn.execute("SELECT status FROM messages WHERE infobip_message_id = %s",
                              (body["results"][0]["messageId"],)).fetchone()["status"]
        usage = conn.execute("SELECT count(*) AS n FROM llm_usage l JOIN users u ON u.id = l.user_id "
                             "WHERE u.phone = %s", (user,)).fetchone()["n"]
    assert status == "failed"
    assert usage == 1  # the call that was made (and billed) is on record although the turn rolled back
    settle()
    assert texts_to(sandbox, user) == [DEFAULT_APOLOGY]


def test_a_reminder_is_not_held_up_by_its_users_slow_turn(client, worker, sandbox, fake_openai, db, settings):
    """The per-user turn lock serialises turns only: reminders (and reports) for the user go on meanwhile."""
    from datetime import datetime, timedelta, timezone

    from shared.queueing.tasks import TASK_DISPATCH_REMINDERS, enqueue, make_celery

    user = new_user()
    fake_openai.script({"delay": 6.0, "content": "slow answer"})
    client.post("/webhooks/infobip", json=inbound(NUMBERS["gamma"], user, {"type": "TEXT", "text": "hi there"}),
                headers=AUTH)
    wait_for(lambda: any(r["json"]["messages"][-1].get("content") == "hi there" for r in fake_openai.requests
                         if r["path"] == "/v1/chat/completions"), what="the slow turn to reach the LLM")
    with db("gamma") as conn:
        uid = conn.execute("SELECT id FROM users WHERE phone = %s", (user,)).fetchone()["id"]
        factories.reminder(conn, uid, text="stretch", due_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    enqueue(make_celery(settings), TASK_DISPATCH_REMINDERS, {})
    first = wait_for(lambda: texts_to(sandbox, user), timeout=30, what="the reminder")
    assert "stretch" in first[0]
    assert wait_for(lambda: len(texts_to(sandbox, user)) == 2 and texts_to(sandbox, user), timeout=30,
                    what="the slow reply")[1] == "slow answer"


def test_a_refused_batch_leaves_no_claims_behind(client, db):
    """A 401 for one result of a batch must not make Infobip's corrected retry look like a duplicate."""
    from helpers import BETA_TOKEN

    user = new_user()
    batch = inbound(NUMBERS["beta"], user, {"type": "TEXT", "text": "first"})
    batch["results"] += inbound(NUMBERS["alpha"], user, {"type": "TEXT", "text": "second"})["results"]
    assert client.post("/webhooks/infobip", json=batch, headers={"X-Webhook-Token": BETA_TOKEN}).status_code == 401
    retry = client.post("/webhooks/infobip", json=batch, headers=AUTH)
    assert retry.status_code == 200 and retry.get_json()["accepted"] == 2 and retry.get_json()["duplicates"] == 0


def test_one_flooding_user_does_not_silence_the_tenant(redis_url, settings):
    """The user's own window is checked first, so a flood spends only that user's allowance."""
    from shared.conversation.ratelimit import RateLimiter
    from shared.queueing.redis_conn import redis_client
    from shared.config.tenants import parse_tenants

    doc = {"tenant_id": f"rl{new_user()[-6:]}", "waba_number": "+1 555 0199", "db_dsn": "postgresql://u@h/rl",
           "embedding_model": "local-hash", "config": {"rate_limit_user": "3/minute", "rate_limit_tenant": "5/minute"}}
    tenant = parse_tenants({"tenants": [doc]}, settings, {}).require(doc["tenant_id"])
    limiter = RateLimiter(redis_url, redis_client(redis_url))
    flood = [limiter.check(tenant, "15550000001") for _ in range(20)]
    assert [v.allowed for v in flood].count(True) == 3
    assert [v.notify for v in flood].count(True) == 1
    others = [limiter.check(tenant, f"1555000001{i}") for i in range(2)]
    assert all(v.allowed for v in others)  # 3 + 2 = the tenant's 5: the flood did not use them up
    assert not limiter.check(tenant, "15550000020").allowed  # and the tenant window still holds
