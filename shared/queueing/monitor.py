"""What the queues look like right now: depth, age of the oldest waiting task, and which workers are alive.

Workers write a heartbeat per queue they consume (workers/metrics.py) into one Redis hash every HEARTBEAT_SECONDS
and remove it when they stop; a heartbeat older than STALE_SECONDS is a dead worker (killed, or its host gone).
The web app reads all of it at scrape time (`/metrics`) and for readiness (`/ready`): a few commands in two
pipelined round trips, never on the webhook path.

The oldest task's age: kombu's Redis transport LPUSHes and the worker BRPOPs, so the oldest task is the list's
last element. Its age is exact for the tasks the webhook and the workers record as accepted (inbound messages,
turns, reports: `accepted_at`); for the others it is the time since this monitor first saw that task at the tail
(a lower bound, precise to one scrape interval).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

import redis

from shared.queueing import accepted

HEARTBEATS = "wabot:heartbeats"          # hash: "<queue>|<worker node name>" -> epoch seconds of its last beat
TAIL_SEEN = "wabot:metrics:tail:"         # + queue: "<task id>|<epoch seconds first seen at the tail>"
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 15.0
FORGET_AFTER_SECONDS = 3600.0            # heartbeats this old are removed by the next beat of any worker


@dataclass(frozen=True)
class QueueState:
    depth: int
    oldest_age: float   # seconds; 0 when empty


def _field(queue: str, node: str) -> str:
    return f"{queue}|{node}"


def beat(client: redis.Redis, queues: Iterable[str], node: str, now: float) -> None:
    """This worker is alive and consumes `queues`; heartbeats dead for an hour are removed on the way."""
    old = [f for f, ts in client.hgetall(HEARTBEATS).items() if now - float(ts) > FORGET_AFTER_SECONDS]
    pipe = client.pipeline(transaction=False)
    pipe.hset(HEARTBEATS, mapping={_field(q, node): repr(now) for q in queues})
    if old:
        pipe.hdel(HEARTBEATS, *old)
    pipe.execute()


def stop(client: redis.Redis, queues: Iterable[str], node: str) -> None:
    fields = [_field(q, node) for q in queues]
    if fields:
        client.hdel(HEARTBEATS, *fields)


def alive(client: redis.Redis, queues: Iterable[str], now: float, stale: float = STALE_SECONDS) -> dict[str, int]:
    """Live workers per queue (a heartbeat within `stale` seconds)."""
    counts = {q: 0 for q in queues}
    for raw_field, ts in client.hgetall(HEARTBEATS).items():
        field = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
        queue = field.split("|", 1)[0]
        if queue in counts and now - float(ts) <= stale:
            counts[queue] += 1
    return counts


def _task_id(message: bytes | str | None) -> str | None:
    if not message:
        return None
    try:
        return str(json.loads(message)["headers"]["id"])
    except (ValueError, KeyError, TypeError):
        return None


def _decode(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def snapshot(client: redis.Redis, queues: Iterable[str], now: float) -> dict[str, QueueState]:
    """Depth and oldest age of each queue: two pipelined round trips (plus a write when a tail changed)."""
    queues = list(queues)
    pipe = client.pipeline(transaction=False)
    for q in queues:
        pipe.llen(q)
        pipe.lindex(q, -1)
    raw = pipe.execute()
    depths, tails = raw[0::2], [_task_id(m) for m in raw[1::2]]
    pipe = client.pipeline(transaction=False)
    for q, task_id in zip(queues, tails):
        pipe.hget(accepted.RECORDS, task_id or "-")
        pipe.get(TAIL_SEEN + q)
    looked = pipe.execute()
    out, updates = {}, {}
    for i, (q, depth, task_id) in enumerate(zip(queues, depths, tails)):
        record, seen = looked[2 * i], _decode(looked[2 * i + 1])
        age = 0.0
        if task_id and record:
            age = now - float(json.loads(record).get("accepted_at") or now)
        elif task_id and seen and seen.split("|", 1)[0] == task_id:
            age = now - float(seen.split("|", 1)[1])
        elif task_id:
            updates[TAIL_SEEN + q] = f"{task_id}|{now!r}"
        out[q] = QueueState(int(depth or 0), max(0.0, age) if depth else 0.0)
    if updates:
        client.mset(updates)
    return out
