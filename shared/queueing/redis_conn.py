"""Redis URLs: one setting, spelled for both clients (kombu wants `redis+socket://`, redis-py `unix://`)."""
from __future__ import annotations

import redis


def broker_url(url: str) -> str:
    if url.startswith("unix://"):
        return "redis+socket://" + url[len("unix://"):]
    return url


def client_url(url: str) -> str:
    if url.startswith("redis+socket://"):
        return "unix://" + url[len("redis+socket://"):]
    return url


def limits_url(url: str) -> str:
    """The `limits` package spells a unix socket `redis+unix://`."""
    url = client_url(url)
    return "redis+unix://" + url[len("unix://"):] if url.startswith("unix://") else url


def redis_client(url: str, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis.from_url(client_url(url), socket_timeout=timeout, socket_connect_timeout=timeout)
