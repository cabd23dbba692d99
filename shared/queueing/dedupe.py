"""Deduplication of Infobip's at-least-once webhooks at the ingress: an atomic claim per (tenant, messageId).

The claim is only a fast first filter; the unique index on messages.infobip_message_id is the final guard.

`claim_record_push` takes the claims of a whole webhook batch, writes the accepted records of the tasks it takes
(shared/queueing/accepted.py) and pushes those tasks onto their queues, in one Lua script: one round trip, and
atomic, so a claim is never taken without its task being queued and recorded. A claim is final at once (kept a
week). (Before: a claim "pending" for 30 s, a MULTI for the records, a publish through kombu and a confirm: four
round trips, five with Celery's task-sent event.) If the script fails (Redis away, or its answer lost), the request
answers 503 after releasing the claims and forgetting the records, so Infobip's retry is accepted; if the script
had run after all, the retry queues the messages twice, which the workers' dedupe absorbs. If Redis cannot even
take the release, the claims stay and so do the records: the sweep publishes their tasks if they are not queued.
"""
from __future__ import annotations

import json
from typing import Sequence

import redis
from redis.commands.core import Script

from shared.queueing import accepted

QUEUED_TTL = 7 * 24 * 3600

# KEYS: records hash, due zset. ARGV: claim TTL, due time, then per task: claim key ('' = no claim), task id,
# record, queue, message. A task whose claim is taken is recorded and pushed; a duplicate is neither.
_CLAIM_RECORD_PUSH = Script(None, b"""
local out = {}
for i = 3, #ARGV, 5 do
  local taken = 1
  if ARGV[i] ~= '' and not redis.call('SET', ARGV[i], 'queued', 'NX', 'EX', ARGV[1]) then taken = 0 end
  if taken == 1 then
    redis.call('HSET', KEYS[1], ARGV[i + 1], ARGV[i + 2])
    redis.call('ZADD', KEYS[2], ARGV[2], ARGV[i + 1])
    redis.call('LPUSH', ARGV[i + 3], ARGV[i + 4])
  end
  out[#out + 1] = taken
end
return out
""")


def key(tenant_id: str, message_id: str) -> str:
    return f"wabot:inbound:{tenant_id}:{message_id}"


def claim(client: redis.Redis, tenant_id: str, message_id: str) -> bool:
    """True for the first caller for this message; False for every duplicate (concurrent or later)."""
    return bool(client.set(key(tenant_id, message_id), "queued", nx=True, ex=QUEUED_TTL))


def claim_record_push(client: redis.Redis, items: Sequence[tuple[accepted.Accepted, str | None, str]], now: float,
                      first_after: float) -> list[bool]:
    """For each (task, claim key or None, its broker message from shared/queueing/tasks.py task_message): take the
    claim (None: no claim needed) and, when taken, record the task as accepted (due for a re-drive at
    now + first_after) and push the message onto its queue. One atomic script, one round trip; True per task
    taken. When it returns, Redis holds every taken task and its record; when it raises, the outcome is unknown
    (see `release_quietly`)."""
    if not items:
        return []
    args: list[str | float] = [QUEUED_TTL, now + first_after]
    for item, claim_key, message in items:
        args += [claim_key or "", item.task_id, json.dumps(accepted.record_fields(item, now)), item.queue, message]
    return [bool(t) for t in _CLAIM_RECORD_PUSH(keys=[accepted.RECORDS, accepted.DUE], args=args, client=client)]


def release(client: redis.Redis, keys: list[str]) -> None:
    if keys:
        client.delete(*keys)


def release_quietly(client: redis.Redis, keys: list[str]) -> None:
    """Release after a failure; if Redis is what failed, the claims stay, and so do their tasks' records."""
    try:
        release(client, keys)
    except redis.RedisError:
        pass
