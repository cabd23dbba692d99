"""Knowledge jobs (queue `knowledge`): documents embedded in batches, URLs fetched, reindexes (shared/knowledge/jobs.py).

Guarantee: at-least-once. The task is published after its job row committed and tracked (re-driven if lost);
every attempt claims the job first, so a redelivered or re-driven copy finds it finished (and does nothing) or
running under a live lease (and looks again after it). A tenant database that is away is retried without bound.
"""
from __future__ import annotations

import threading

import psycopg

from shared.config.tenants import Tenant
from shared.knowledge.jobs import JobBusy, JobRetry, JobRun, run_job
from shared.knowledge.store import KnowledgeStore
from shared.queueing.tasks import QUEUE_KNOWLEDGE, TASK_KNOWLEDGE_JOB
from workers.app import app
from workers.base import WabotTask
from workers.runtime import get_runtime


_stores: dict[str, KnowledgeStore] = {}
_stores_lock = threading.Lock()


def knowledge_store(tenant: Tenant) -> KnowledgeStore:
    """One store per tenant and process: its embedders (a local model is loaded once) are kept."""
    with _stores_lock:
        if tenant.tenant_id not in _stores:
            _stores[tenant.tenant_id] = KnowledgeStore(tenant)
        return _stores[tenant.tenant_id]


@app.task(name=TASK_KNOWLEDGE_JOB, queue=QUEUE_KNOWLEDGE, base=WabotTask, bind=True, max_retries=None,
          confirms_accepted=True, retry_on=(psycopg.OperationalError,))
def run_knowledge_job(self, payload: dict) -> str:
    """Run one knowledge job; its status and progress are in its `knowledge_jobs` row."""
    tenant = get_runtime().tenants.require(payload["tenant_id"])
    try:
        return run_job(JobRun(self.uow, knowledge_store(tenant)), payload["job_id"])
    except JobBusy as exc:
        raise self.retry(countdown=exc.retry_in, exc=exc)
    except JobRetry as exc:
        raise self.retry_later(exc)
