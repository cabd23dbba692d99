"""What every `wabot` tenant command shares: the tenant by id, a connection to its database (one transaction),
a unit of work whose committed tasks are published like the workers publish them, and the error line."""
from __future__ import annotations

import sys
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from shared.errors import ConfigError


def load_tenant(tenant_id: str):
    """(settings, tenant); ConfigError naming the problem when the settings or the tenant are wrong. Beside a
    running `make dev`, its embedded servers are used unless the environment names others."""
    from devtools.devstack import dev_env
    from shared.config.settings import environment, load_settings
    from shared.config.tenants import load_tenants

    env = {**dev_env(), **environment(dotenv=True)}
    settings = load_settings(env)
    return settings, load_tenants(settings, env=env).require(tenant_id)


@contextmanager
def connection(tenant) -> Iterator:
    """A connection to the tenant's database (dict rows) in one transaction: committed when the block ends,
    rolled back on error."""
    import psycopg
    from psycopg.rows import dict_row

    try:
        conn = psycopg.connect(tenant.db_dsn, connect_timeout=10, row_factory=dict_row)
    except psycopg.OperationalError as exc:
        raise ConfigError(f"tenant {tenant.tenant_id}: database unreachable ({exc.__class__.__name__})") from None
    with conn:
        yield conn


@contextmanager
def unit_of_work(settings) -> Iterator:
    """A unit of work on one small pool; what its transactions committed is published when the block ends
    (`uow.flush()` inside it publishes sooner). Tracked tasks are recorded as accepted work first, as the workers
    do (workers/base.py publish_tracked), so the sweep re-drives them if they are lost."""
    from shared.db.pools import TenantPools
    from shared.db.unit_of_work import UnitOfWork
    from shared.queueing import accepted
    from shared.queueing.redis_conn import redis_client
    from shared.queueing.tasks import TASK_QUEUES, enqueue, make_celery

    celery, pools, redis = make_celery(settings), TenantPools(max_size=1), redis_client(settings.redis_url)

    def publish(pub) -> None:
        task_id = None
        if pub.tracked:
            task_id = str(uuid.uuid4())
            accepted.record(redis, [accepted.Accepted(task_id, pub.task, TASK_QUEUES[pub.task], pub.payload)],
                            time.time(), settings.accepted_redrive_seconds)
        enqueue(celery, pub.task, pub.payload, pub.countdown, task_id=task_id)

    uow = UnitOfWork(pools, publish)
    try:
        yield uow
        uow.flush()
    finally:
        pools.close()


def fail(message: str, code: int = 1) -> int:
    print(f"wabot: {message}", file=sys.stderr)
    return code
