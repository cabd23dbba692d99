"""The unit of work: what a transaction registers is published only after it committed, once; never inside an open
transaction. Real Postgres for the outbox case; the guard needs no stack."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

import factories
from helpers import new_user
from shared.db.pools import TenantPools
from shared.db.unit_of_work import Publication, UnitOfWork
from shared.delivery.outbox import queue_reply
from shared.queueing.tasks import TASK_RUN_TURN, TASK_SEND, PublishInTransaction, enqueue, send_payload


class Rollback(Exception):
    pass


@pytest.fixture
def pools():
    p = TenantPools(max_size=2)
    yield p
    p.close()


def queue(tx, phone: str, text: str) -> list[int]:
    uid = factories.user(tx.conn, phone=phone)["id"]
    return queue_reply(tx, user_id=uid, phone=phone, text=text, source_message=None, request_id="req_uow",
                       now=datetime.now(timezone.utc), last_inbound_at=datetime.now(timezone.utc))


def outbox_rows(db, phone: str) -> int:
    with db("alpha") as conn:
        return conn.execute("SELECT count(*) AS n FROM outbound_messages WHERE to_number = %s",
                            (phone,)).fetchone()["n"]


def test_a_send_that_rolled_back_is_never_published_and_one_that_committed_once(tenants, pools, db):
    published: list[Publication] = []
    uow = UnitOfWork(pools, published.append, request_id="req_uow", message_id="in-1")
    alpha = tenants.require("alpha")
    rolled_back, committed = new_user(), new_user()
    with pytest.raises(Rollback):
        with uow.transaction(alpha) as tx:
            queue(tx, rolled_back, "never sent")
            assert tx.publications  # registered, not published
            raise Rollback
    with uow.transaction(alpha) as tx:
        [oid] = queue(tx, committed, "sent once")
        assert published == []  # nothing goes out while the transaction is open
    assert outbox_rows(db, rolled_back) == 0 and outbox_rows(db, committed) == 1
    assert uow.flush() == published == [Publication(TASK_SEND, send_payload("alpha", oid, "req_uow", "in-1"))]
    assert uow.flush() == [] and len(published) == 1


def test_publishing_inside_an_open_transaction_is_refused(tenants, pools):
    uow = UnitOfWork(pools, lambda publication: None)
    with uow.transaction(tenants.require("alpha")) as tx:
        with pytest.raises(PublishInTransaction, match=TASK_RUN_TURN):
            enqueue(None, TASK_RUN_TURN, {"tenant_id": "alpha", "user_id": 1})  # refused before Redis is asked
        tx.publish_after_commit(TASK_RUN_TURN, {"tenant_id": "alpha", "user_id": 1})
    with uow.transaction(tenants.require("alpha")):
        with pytest.raises(PublishInTransaction):
            uow.flush()  # what the first transaction committed waits until no transaction is open
    assert [p.task for p in uow.flush()] == [TASK_RUN_TURN]


def test_a_publish_that_fails_keeps_itself_and_the_rest_for_the_next_flush(tenants, pools):
    calls: list[str] = []

    def publish(publication: Publication) -> None:
        calls.append(publication.payload["n"])
        if publication.payload["n"] == 1 and calls.count(1) == 1:
            raise ConnectionError("redis is away")

    uow = UnitOfWork(pools, publish)
    with uow.transaction(tenants.require("alpha")) as tx:
        for n in range(3):
            tx.publish_after_commit(TASK_RUN_TURN, {"n": n}, tracked=True)
    with pytest.raises(ConnectionError):
        uow.flush()
    assert [p.payload["n"] for p in uow.pending()] == [1, 2]
    assert [p.payload["n"] for p in uow.flush()] == [1, 2] and calls == [0, 1, 1, 2]


def test_the_base_task_publishes_what_committed_even_when_its_body_then_fails(tenants, pools, monkeypatch):
    """WabotTask flushes the task's unit of work after the body, whatever the body did next, and a `retry_on`
    error goes through the declared retry policy (here max_retries=0: the error is re-raised)."""
    from types import SimpleNamespace

    import psycopg
    from celery import Celery

    import workers.base

    published: list[Publication] = []
    monkeypatch.setattr(workers.base, "get_runtime", lambda: SimpleNamespace(pools=pools))
    monkeypatch.setattr(workers.base, "publish", lambda app, publication: published.append(publication))
    waits: list[tuple] = []
    monkeypatch.setattr(workers.base, "backoff", lambda *args: waits.append(args) or 0.0)
    app = Celery("uow-test", set_as_current=False)
    alpha = tenants.require("alpha")

    @app.task(base=workers.base.WabotTask, bind=True, shared=False, max_retries=0,
              retry_on=(psycopg.OperationalError,), retry_base=3.0, retry_cap=7.0)
    def body(self, payload: dict) -> None:
        with self.uow.transaction(alpha) as tx:
            tx.publish_after_commit(TASK_RUN_TURN, {"n": 1})
        with pytest.raises(Rollback), self.uow.transaction(alpha) as tx:
            tx.publish_after_commit(TASK_RUN_TURN, {"n": 2})
            raise Rollback
        assert published == []  # nothing before the body is done
        raise psycopg.OperationalError("the tenant database went away")

    result = body.apply(kwargs={"payload": {"tenant_id": "alpha", "request_id": "req_base"}})
    assert isinstance(result.result, psycopg.OperationalError)
    assert [p.payload for p in published] == [{"n": 1}] and waits == [(0, 3.0, 7.0)]
