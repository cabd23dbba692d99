"""A unit of work: transactions on tenant databases, and the tasks to publish once they committed.

Why: a task published before its rows are committed can run before they exist (or after they were rolled back).
Domain code therefore never publishes: it registers tasks on the transaction it writes in
(`tx.publish_after_commit`, `tx.send_after_commit`); a transaction that commits hands them to its unit of work, one
that rolls back drops them, and `flush()` publishes what committed (the workers' base task flushes after every
task body, also when the body then retries or fails). The guard: publishing while a unit-of-work transaction is
open on this thread raises `PublishInTransaction` (`shared.queueing.tasks.enqueue` and `flush` check it).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import psycopg

from shared.config.tenants import Tenant
from shared.db.pools import TenantPools
from shared.queueing.tasks import TASK_SEND, publishing_refused, refuse_inside_transaction, send_payload


@dataclass(frozen=True)
class Publication:
    task: str
    payload: dict
    countdown: float | None = None
    # tracked: recorded as accepted work before it is published (workers.base.publish_tracked), and publishing
    # raises while Redis is away (the task retries) instead of waiting in the retrying publisher's memory
    tracked: bool = False


@dataclass
class Transaction:
    """What domain code writes in: the connection, its tenant, and what to publish once it committed."""

    conn: psycopg.Connection
    tenant: Tenant
    request_id: str | None = None   # carried into the payloads of the sends registered here
    message_id: str | None = None
    publications: list[Publication] = field(default_factory=list)

    def publish_after_commit(self, task: str, payload: dict, countdown: float | None = None, *,
                             tracked: bool = False) -> None:
        self.publications.append(Publication(task, payload, countdown, tracked))

    def send_after_commit(self, outbound_ids: list[int]) -> None:
        """The send task of each outbox row written in this transaction."""
        for outbound_id in outbound_ids:
            self.publish_after_commit(TASK_SEND, send_payload(self.tenant.tenant_id, outbound_id, self.request_id,
                                                              self.message_id))


Publish = Callable[[Publication], None]


class UnitOfWork:
    """One caller's (a task's) transactions and what they committed to publish. Not shared between threads."""

    def __init__(self, pools: TenantPools, publish: Publish, *, request_id: str | None = None,
                 message_id: str | None = None) -> None:
        self.pools, self._publish = pools, publish
        self.request_id, self.message_id = request_id, message_id
        self._committed: list[Publication] = []

    @contextmanager
    def transaction(self, tenant: Tenant) -> Iterator[Transaction]:
        """A connection in a transaction (shared.db.pools): commits when the block ends, rolls back on error; what
        was registered on it is kept for `flush` only once the commit succeeded."""
        with publishing_refused(), self.pools.connection(tenant) as conn:
            tx = Transaction(conn, tenant, self.request_id, self.message_id)
            yield tx
        self._committed.extend(tx.publications)

    def pending(self) -> list[Publication]:
        """What committed and waits for `flush`."""
        return list(self._committed)

    def flush(self) -> list[Publication]:
        """Publish what committed, in the order it was registered; returns it. A publish that raises (a tracked
        one while Redis is away) leaves itself and the rest pending."""
        published: list[Publication] = []
        while self._committed:
            refuse_inside_transaction(self._committed[0].task)
            self._publish(self._committed[0])
            published.append(self._committed.pop(0))
        return published
