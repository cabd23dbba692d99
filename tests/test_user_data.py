"""A user's data on request (issue 12): the export holds every row about the user; the erasure leaves nothing
of the user in any table (every text and jsonb column of every table is scanned), also while a turn of the user
is running, keeps the usage counts (anonymised), and records an audit row without the phone; the erasure a user
asks for by message, with its confirmation; the CLI."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from psycopg import sql

import factories
from helpers import AUTH, NUMBERS, inbound, new_user, wait_for

from devtools.devstack import ROOT
from ingress.admin_api.tokens import hash_token, new_token
from shared.clock import utcnow
from shared.db import operators, pending_reports
from shared.db.pools import TenantPools
from shared.db.unit_of_work import UnitOfWork
from shared.privacy.phrases import erasure_request_language, is_confirmation
from shared.privacy.requests import export_user, forget_user, handle_in_turn


@pytest.mark.parametrize("text,language", [
    ("Please delete my data", "en"), ("forget me!", "en"), ("Borra mis datos, por favor", "es"),
    ("¡Olvídame!", "es"), ("Lösche bitte meine Daten", "de"), ("Meine Daten löschen", "de"),
    ("Supprimez mes données", "fr"), ("Apague meus dados", "pt"), ("Cancella i miei dati", "it"),
    ("Verwijder mijn gegevens", "nl"), ("what's the weather?", None), ("I deleted my photos", None), ("", None)])
def test_erasure_requests_are_recognised(text, language):
    assert erasure_request_language(text) == language


def test_confirmations():
    assert all(is_confirmation(t) for t in ("YES", "yes.", "Sí", "ja!", "Oui", "sim"))
    assert not any(is_confirmation(t) for t in ("no", "yes but first tell me the weather forecast please", None))


def _scan(conn, needles: list[str]) -> list[str]:
    """Every (table.column) of the database whose text, varchar, text[] or jsonb value contains a needle."""
    columns = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND data_type IN ('text', 'character varying', 'jsonb', 'json', 'ARRAY')").fetchall()
    found = []
    for c in columns:
        for needle in needles:
            query = sql.SQL("SELECT count(*) AS n FROM {} WHERE {}::text LIKE %s").format(
                sql.Identifier(c["table_name"]), sql.Identifier(c["column_name"]))
            if conn.execute(query, (f"%{needle}%",)).fetchone()["n"]:
                found.append(f"{c['table_name']}.{c['column_name']} holds {needle!r}")
    return found


def _message_id(secret: str) -> str:
    """Our messageId of the user's send: a random id of ours (kept after the erasure), unlike the user's texts."""
    return secret[::-1]


def _full_user(conn, secret: str) -> dict:
    user = factories.user(conn, name=f"Name {secret}")
    msg = factories.message(conn, user["id"], body=f"text {secret}", payload={"text": f"text {secret}"})
    factories.memory_item(conn, user["id"], title=f"note {secret}")
    factories.reminder(conn, user["id"], text=f"reminder {secret}")
    factories.usage(conn, user_id=user["id"], prompt_tokens=11, completion_tokens=4, request_id=f"req-{secret}")
    conn.execute("INSERT INTO outbound_messages (message_id, user_id, source_message, to_number, body, content, "
                 "status) VALUES (%s, %s, %s, %s, %s, %s, 'sent')",
                 (f"alpha.{_message_id(secret)}", user["id"], msg["id"], user["phone"], f"reply {secret}",
                  f'{{"to": "{user["phone"]}", "text": "reply {secret}"}}'))
    conn.execute("INSERT INTO conversation_events (user_id, kind, actor, reason) VALUES (%s, 'handoff', 'bot', %s)",
                 (user["id"], f"because {secret}"))
    conn.execute("INSERT INTO conversation_summaries (user_id, summary, covers_to) VALUES (%s, %s, %s)",
                 (user["id"], f"- summary {secret}", msg["id"]))
    return user


def test_export_holds_every_row_about_the_user(db):
    secret = uuid.uuid4().hex
    with db("alpha") as conn:
        user = _full_user(conn, secret)
        other = factories.user(conn)
        factories.message(conn, other["id"], body="not yours")
        data = export_user(conn, user["id"], actor="test")
    assert data["user"]["phone"] == user["phone"] and data["user"]["name"] == f"Name {secret}"
    assert [m["body"] for m in data["messages"]] == [f"text {secret}"]
    assert [m["title"] for m in data["memory_chunks"]] == [f"note {secret}"]
    assert [r["text"] for r in data["reminders"]] == [f"reminder {secret}"]
    assert [o["body"] for o in data["outbound_messages"]] == [f"reply {secret}"]
    assert data["outbound_messages"][0]["status"] == "sent"
    assert [e["reason"] for e in data["conversation_events"]] == [f"because {secret}"]
    assert [u["total_tokens"] for u in data["llm_usage"]] == [15]
    assert [s["summary"] for s in data["conversation_summaries"]] == [f"- summary {secret}"]
    assert "not yours" not in str(data)


def test_forget_leaves_nothing_but_anonymous_usage_and_an_audit_row(db):
    secret = uuid.uuid4().hex
    with db("alpha") as conn:
        user = _full_user(conn, secret)
        with conn.transaction():
            deleted = forget_user(conn, user["id"], actor="test", now=utcnow())
        assert deleted["messages"] == 1 and deleted["users"] == 1 and deleted["usage_rows_anonymised"] == 1
        assert deleted["conversation_summaries"] == 1
        assert _scan(conn, [user["phone"], secret]) == []
        usage = conn.execute("SELECT user_id, total_tokens FROM llm_usage WHERE total_tokens = 15 AND "
                             "user_id IS NULL AND request_id IS NULL").fetchall()
        assert usage, "the usage counts survive, anonymised"
        audit = conn.execute("SELECT * FROM audit_log WHERE action = 'user.forget' ORDER BY id DESC LIMIT 1").fetchone()
        assert audit["actor"] == "test" and len(audit["subject_hash"]) == 64
        # a delivery report that arrives after the erasure is kept without the number it names
        message_id = f"alpha.{_message_id(secret)}"
        pending_reports.store(conn, message_id, "delivery", {"messageId": message_id, "to": user["phone"]})
        assert _scan(conn, [user["phone"]]) == []
        assert forget_user(conn, user["id"], actor="test", now=utcnow()) is None


def _pending(conn, user_id: int, text: str) -> list[dict]:
    factories.message(conn, user_id, body=text, status="received", request_id="r1")
    return conn.execute("SELECT id, body, request_id FROM messages WHERE user_id = %s AND status = 'received' "
                        "ORDER BY id", (user_id,)).fetchall()


@pytest.fixture
def asker(tenants, db):
    """A new alpha user, and a unit of work on alpha whose publications are kept (not sent)."""
    tenant, pools = tenants.require("alpha"), TenantPools(max_size=2)
    with db("alpha") as conn:
        user = factories.user(conn)
    yield tenant, UnitOfWork(pools, lambda _pub: None), user
    pools.close()


def test_a_user_asks_by_message_and_confirms(asker, db):
    tenant, uow, user = asker
    with uow.transaction(tenant) as tx:
        rows = _pending(tx.conn, user["id"], "Bitte lösche meine Daten")
        handled = handle_in_turn(tx, user, rows, now=utcnow(), request_id=None)
    assert handled.answered == [r["id"] for r in rows] and uow.pending()  # the question's send
    with db("alpha") as conn:
        asked = conn.execute("SELECT body FROM messages WHERE user_id = %s AND role = 'assistant'",
                             (user["id"],)).fetchone()["body"]
        assert "YES" in asked and "Daten" in asked
    with uow.transaction(tenant) as tx:
        rows = _pending(tx.conn, user["id"], "JA")
        handled = handle_in_turn(tx, user, rows, now=utcnow(), request_id=None)
    assert handled is not None and "erased" in handled.reason
    with db("alpha") as conn:
        assert _scan(conn, [user["phone"]]) == []


def test_anything_but_yes_or_an_expired_question_cancels(asker, db):
    tenant, uow, user = asker
    with uow.transaction(tenant) as tx:
        handle_in_turn(tx, user, _pending(tx.conn, user["id"], "delete my data"), now=utcnow(), request_id=None)
    with uow.transaction(tenant) as tx:
        tx.conn.execute("UPDATE messages SET status = 'answered' WHERE user_id = %s", (user["id"],))
        assert handle_in_turn(tx, user, _pending(tx.conn, user["id"], "what time is it?"), now=utcnow(),
                              request_id=None) is None
        tx.conn.execute("UPDATE messages SET status = 'answered' WHERE user_id = %s", (user["id"],))
        assert handle_in_turn(tx, user, _pending(tx.conn, user["id"], "yes"), now=utcnow(),
                              request_id=None) is None  # the question was cancelled: a plain "yes"
        handle_in_turn(tx, user, _pending(tx.conn, user["id"], "forget me"), now=utcnow(), request_id=None)
    with uow.transaction(tenant) as tx:  # asked again, but the YES comes after the question expired
        late = utcnow() + timedelta(minutes=16)
        assert handle_in_turn(tx, user, _pending(tx.conn, user["id"], "YES"), now=late, request_id=None) is None
    with db("alpha") as conn:
        assert conn.execute("SELECT count(*) AS n FROM users WHERE id = %s", (user["id"],)).fetchone()["n"] == 1


def test_forget_while_the_users_turn_is_running(client, worker, sandbox, fake_openai, db, tenants):
    """The turn waits on a slow model when the operator erases the user: the erasure waits for the turn, then
    deletes what it wrote; afterwards no table holds the phone or the texts, and the usage counts survive."""
    phone, secret = new_user(), uuid.uuid4().hex
    token = new_token()
    with db("gamma") as conn:
        operators.create(conn, f"op-{secret[:6]}", hash_token(token))
        before = conn.execute("SELECT count(*) AS n FROM llm_usage WHERE user_id IS NULL").fetchone()["n"]
    fake_openai.script({"delay": 3.0, "content": f"answer {secret}"})
    client.post("/webhooks/infobip", json=inbound(NUMBERS["gamma"], phone, {"type": "TEXT", "text": f"q {secret}"},
                                                  name=f"Name {secret}"), headers=AUTH)
    wait_for(lambda: any(secret in str(r["json"]) for r in fake_openai.requests
                         if r["path"] == "/v1/chat/completions"), what="the turn to reach the slow model")
    with db("gamma") as conn:
        user_id = conn.execute("SELECT id FROM users WHERE phone = %s", (phone,)).fetchone()["id"]
    started = time.monotonic()
    resp = client.post(f"/api/v1/tenants/gamma/users/{user_id}/forget", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.get_json()
    assert time.monotonic() - started > 1.0, "the erasure waited for the running turn"
    assert resp.get_json()["deleted"]["messages"] == 2  # the question and the answer the turn committed
    time.sleep(3)  # late work: the reply's send task, its reports
    with db("gamma") as conn:
        assert _scan(conn, [phone, secret]) == []
        after = conn.execute("SELECT count(*) AS n FROM llm_usage WHERE user_id IS NULL").fetchone()["n"]
    assert after > before, "the turn's usage survives, anonymised"


def _wabot(stack_env, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devtools.cli", *argv], env=stack_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_cli_users_export_and_forget(stack_env, db, tmp_path):
    secret = uuid.uuid4().hex
    with db("beta") as conn:
        user = factories.user(conn)
        factories.message(conn, user["id"], body=f"text {secret}")
    out = tmp_path / "export.json"
    exported = _wabot(stack_env, "users", "export", "--tenant", "beta", "--phone", user["phone"], "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert secret in out.read_text() and user["phone"] in out.read_text()
    refused = _wabot(stack_env, "users", "forget", "--tenant", "beta", "--phone", user["phone"])
    assert refused.returncode == 2 and "--yes" in refused.stderr
    forgot = _wabot(stack_env, "users", "forget", "--tenant", "beta", "--phone", user["phone"], "--yes")
    assert forgot.returncode == 0 and user["phone"] not in forgot.stdout, forgot.stderr
    with db("beta") as conn:
        assert _scan(conn, [user["phone"], secret]) == []
    assert _wabot(stack_env, "users", "forget", "--tenant", "beta", "--phone", user["phone"], "--yes").returncode == 1


def test_delete_my_data_by_message_through_the_running_bot(client, worker, sandbox, db):
    """The whole path: webhook, worker, turn: the question comes back; YES erases the user and everything said."""
    phone, secret = new_user(), uuid.uuid4().hex

    def texts() -> list[str]:
        return [r["json"]["content"]["text"] for r in sandbox.requests(path="/whatsapp/1/message/text")
                if r["json"]["to"] == phone]

    def say(text: str) -> None:
        assert client.post("/webhooks/infobip", json=inbound(NUMBERS["alpha"], phone, {"type": "TEXT", "text": text}),
                           headers=AUTH).status_code == 200

    say(f"my secret word is {secret}")
    wait_for(lambda: len(texts()) == 1, what="the bot's answer")
    say("please delete my data")
    question = wait_for(lambda: texts()[1:], what="the confirmation question")[0]
    assert "YES" in question
    say("YES")
    wait_for(lambda: _gone(db, phone), what="the user's erasure")
    with db("alpha") as conn:
        assert _scan(conn, [phone, secret]) == []


def _gone(db, phone: str) -> bool:
    with db("alpha") as conn:
        return conn.execute("SELECT count(*) AS n FROM users WHERE phone = %s", (phone,)).fetchone()["n"] == 0
