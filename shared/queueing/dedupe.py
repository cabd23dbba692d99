"""Deduplication of Infobip's at-least-once webhooks at the ingress: an atomic claim per (tenant, messageId).

The claim is only a fast first filter; the unique index on messages.infobip_message_id is the final guard.
A claim is "pending" for a few seconds while its request enqueues, then "queued" for a week. If the enqueue
fails, the claim is released so Infobip's retry is accepted; if the ingress process dies in between, the short
pending TTL lets a later retry through.
"""
from __future__ import annotations

import redis

PENDING_TTL = 30
QUEUED_TTL = 7 * 24 * 3600


def _key(tenant_id: str, message_id: str) -> str:
    return f"wabot:inbound:{tenant_id}:{message_id}"


def claim(client: redis.Redis, tenant_id: str, message_id: str) -> bool:
    """True for the first caller for this message; False for every duplicate (concurrent or later)."""
    return bool(client.set(_key(tenant_id, message_id), "pending", nx=True, ex=PENDING_TTL))


def confirm(client: redis.Redis, keys: list[tuple[str, str]]) -> None:
    if keys:
        pipe = client.pipeline(transaction=False)
        for tenant_id, message_id in keys:
            pipe.set(_key(tenant_id, message_id), "queued", ex=QUEUED_TTL)
        pipe.execute()


def release(client: redis.Redis, keys: list[tuple[str, str]]) -> None:
    if keys:
        client.delete(*(_key(t, m) for t, m in keys))


def release_quietly(client: redis.Redis, keys: list[tuple[str, str]]) -> None:
    """Release after a failure; Redis may be the thing that failed, and the pending TTL then releases them."""
    try:
        release(client, keys)
    except redis.RedisError:
        pass
