"""Rolling conversation summaries (queue `summaries`): one user's older messages folded into their summary
(shared/conversation/summaries.py), off the reply's path.

Guarantee: at-least-once and idempotent. The task is published after the turn that asked for it committed; the
update summarises only messages after the `covers_to` it read and writes only if nobody moved it meanwhile, so a
redelivered copy does nothing twice. A lost task is asked for again by a later turn (after REQUEST_EVERY). A
tenant database that is away, or a model error worth retrying, is retried with backoff a few times; after that the
summary waits for the next request (the prompt drops the oldest history meanwhile).
"""
from __future__ import annotations

import psycopg

from shared.conversation.summaries import update_summary
from shared.llm.base import LLMError
from shared.queueing.tasks import QUEUE_SUMMARIES, TASK_UPDATE_SUMMARY
from workers.app import app
from workers.base import WabotTask
from workers.runtime import get_runtime


@app.task(name=TASK_UPDATE_SUMMARY, queue=QUEUE_SUMMARIES, base=WabotTask, bind=True, max_retries=5,
          retry_on=(psycopg.OperationalError, LLMError))
def update_user_summary(self, payload: dict) -> str:
    """Fold one user's older messages into their summary."""
    rt = get_runtime()
    tenant = rt.tenants.require(payload["tenant_id"])
    deps = rt.turn_deps
    return update_summary(tenant, self.uow, deps.llm_for, int(payload["user_id"]), deps.clock())
