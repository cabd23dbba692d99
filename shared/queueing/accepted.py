"""What the webhook acknowledged, kept in Redis until a worker has done its durable part.

Guarantee, at-least-once from the 2xx on: the ingress records every task it accepts (name and payload, under
the task's id; in the same atomic script as its dedupe claim, shared/queueing/dedupe.py) *before* it publishes
the task and answers 2xx; the task's worker forgets the record once the
task succeeded (the inbound message is stored, the report applied). A task lost in between is found by the
`redrive_accepted` sweep and published again:
- kombu's Redis transport takes a message off the queue with BRPOP and only then records it as unacked, so a
  worker killed between the two loses it without a trace;
- Redis restarted without its data, or a publish that Redis confirmed but never kept.
A record is re-driven only when its task is no longer waiting in its queue, first after `first_after` seconds and
then with doubling waits, so a backlog is not flooded with copies. Every recorded task is idempotent (storing a
message is unique per messageId, applying a report never moves a message backwards), so a re-drive that was not
needed costs one duplicate look. After `max_redrives` a record is moved to a dead-letter hash and logged as an
error for an operator: never dropped silently.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable

import redis

log = logging.getLogger(__name__)

RECORDS = "wabot:accepted"          # hash: task id -> {"task", "payload", "queue", "accepted_at", "redrives"}
DUE = "wabot:accepted:due"          # sorted set: task id -> when (epoch seconds) it may next be re-driven
DEAD = "wabot:accepted:dead"        # hash: task id -> record, after max_redrives re-drives
PRIORITY_SEPARATOR = "\x06\x16"     # kombu's Redis transport: queue "q" at priority p is the list "q\x06\x16p"


@dataclass(frozen=True)
class Accepted:
    task_id: str
    task: str
    queue: str
    payload: dict


def record_fields(item: Accepted, now: float) -> dict:
    """The stored record of a newly accepted task (also written by shared/queueing/dedupe.py claim_and_record)."""
    return {"task": item.task, "queue": item.queue, "payload": item.payload, "accepted_at": now, "redrives": 0}


def record(client: redis.Redis, items: Iterable[Accepted], now: float, first_after: float) -> None:
    """Remember accepted tasks before they are published (one MULTI: all or none). The webhook records its
    tasks together with their dedupe claims instead (shared/queueing/dedupe.py claim_and_record)."""
    items = list(items)
    if not items:
        return
    pipe = client.pipeline(transaction=True)
    for item in items:
        pipe.hset(RECORDS, item.task_id, json.dumps(record_fields(item, now)))
        pipe.zadd(DUE, {item.task_id: now + first_after})
    pipe.execute()


def forget(client: redis.Redis, task_ids: Iterable[str]) -> None:
    """The tasks did their durable part (or their batch was refused with a non-2xx): nothing left to re-drive."""
    ids = list(task_ids)
    if ids:
        pipe = client.pipeline(transaction=True)
        pipe.hdel(RECORDS, *ids)
        pipe.zrem(DUE, *ids)
        pipe.execute()


def forget_quietly(client: redis.Redis, task_ids: Iterable[str]) -> None:
    """Forget after a failure; Redis may be what failed, and then a later re-drive is a harmless duplicate."""
    try:
        forget(client, task_ids)
    except redis.RedisError:
        log.warning("accepted records not forgotten; a sweep may publish them once more")


def waiting_task_ids(client: redis.Redis, queues: Iterable[str]) -> set[str]:
    """Ids of the tasks still waiting in these queues (every priority level). O(queue length): only called when
    some record is due, at most once per sweep."""
    ids: set[str] = set()
    for queue in set(queues):
        keys = [queue] + [k.decode() if isinstance(k, bytes) else k
                          for k in client.scan_iter(match=f"{queue}{PRIORITY_SEPARATOR}*", count=100)]
        for key in keys:
            for raw in client.lrange(key, 0, -1):
                try:
                    ids.add(json.loads(raw)["headers"]["id"])
                except (ValueError, KeyError, TypeError):
                    continue
    return ids


# Update a record only while it exists: a worker may forget it between our read and our write.
_UPDATE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  return 1
end
redis.call('ZREM', KEYS[2], ARGV[1])
return 0
"""


def _update(client: redis.Redis, task_id: str, record_json: str, due_at: float) -> None:
    client.eval(_UPDATE, 2, RECORDS, DUE, task_id, record_json, due_at)


@dataclass
class Redrive:
    published: list[str] = field(default_factory=list)
    still_waiting: int = 0
    dead: list[str] = field(default_factory=list)


def redrive(client: redis.Redis, publish: Callable[[str, dict, str], None], now: float, *, first_after: float,
            max_redrives: int, limit: int = 500) -> Redrive:
    """Publish again the due records whose task is no longer in its queue. `publish(task, payload, task_id)`
    raises when the broker does not take it; the record then stays due for the next sweep."""
    out = Redrive()
    due_ids = [i.decode() if isinstance(i, bytes) else i for i in client.zrangebyscore(DUE, "-inf", now, 0, limit)]
    if not due_ids:
        return out
    raws = client.hmget(RECORDS, due_ids)
    records = {tid: json.loads(raw) for tid, raw in zip(due_ids, raws) if raw is not None}
    orphans = [tid for tid in due_ids if tid not in records]
    if orphans:
        client.zrem(DUE, *orphans)
    waiting = waiting_task_ids(client, {r["queue"] for r in records.values()})
    for task_id, rec in records.items():
        if task_id in waiting:  # a backlog, not a loss: look again later
            out.still_waiting += 1
            _update(client, task_id, "", now + first_after)
            continue
        if rec["redrives"] >= max_redrives:
            pipe = client.pipeline(transaction=True)
            pipe.hset(DEAD, task_id, json.dumps({**rec, "dead_at": now}))
            pipe.hdel(RECORDS, task_id)
            pipe.zrem(DUE, task_id)
            pipe.execute()
            out.dead.append(task_id)
            log.error("accepted task re-driven too often: moved to the dead-letter hash for an operator",
                      extra={"task_id": task_id, "task": rec["task"], "tenant_id": rec["payload"].get("tenant_id"),
                             "message_id": rec["payload"].get("message_id"), "dead_letter_key": DEAD})
            continue
        publish(rec["task"], rec["payload"], task_id)
        rec["redrives"] += 1
        _update(client, task_id, json.dumps(rec), now + first_after * 2 ** rec["redrives"])
        out.published.append(task_id)
    return out
