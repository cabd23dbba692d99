"""Knowledge jobs (queue `knowledge`): documents embedded in batches, URLs fetched, reindexes (shared/knowledge/jobs.py).

Guarantee: at-least-once. The task is published after its job row committed and tracked (re-driven if lost);
every attempt claims the job first, so a redelivered or re-driven copy finds it finished (and does nothing) or
running under a live lease (and looks again after it). A tenant database that is away is retried without bound.
"""
from __future__ import annotations


import psycopg

from shared.knowledge.jobs import JobBusy, JobRetry, JobRun, run_job
from shared.knowledge.store import store_for
from shared.queueing.tasks import QUEUE_KNOWLEDGE, TASK_KNOWLEDGE_JOB
from workers.app import app
from workers.base import WabotTask
from workers.runtime import get_runtime


@app.task(name=TASK_KNOWLEDGE_JOB, queue=QUEUE_KNOWLEDGE, base=WabotTask, bind=True, max_retries=None,
          confirms_accepted=True, retry_on=(psycopg.OperationalError,))
def run_knowledge_job(self, payload: dict) -> str:
    """Run one knowledge job; its status and progress are in its `knowledge_jobs` row."""
    tenant = get_runtime().tenants.require(payload["tenant_id"])
    try:
        return run_job(JobRun(self.uow, store_for(tenant)), payload["job_id"])
    except JobBusy as exc:
        raise self.retry(countdown=exc.retry_in, exc=exc)
    except JobRetry as exc:
        raise self.retry_later(exc)
