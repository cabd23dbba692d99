"""The workers' Redis transport: kombu's, with one bug worked around so a Redis restart never kills a worker, and
one client per connection pool instead of one per operation.

The bug (kombu 5.7.0 with celery 5.7.0, reproduced by tests/test_outages.py): when the broker connection is lost,
celery's `Consumer.on_connection_error_after_connected` calls `connection.collect()` and then `connection.close()`.
`collect()` first tries to close the default channel; with Redis down that close raises a connection error half
way (kombu's `maybe_close_channel` swallows it) before the channel is marked closed, and `collect()` then drops the
transport's client (`Connection._do_close_transport`: `transport.client = None`) but keeps `_default_channel`.
`close()` closes that channel again: `QoS.restore_unacked_once` needs a new connection pool, and
`Channel._connparams` reads `self.connection.client.hostname` -> `AttributeError: 'NoneType' object has no
attribute 'hostname'`. An AttributeError is not one of the transport's connection errors, so celery reports
"Unrecoverable error" and the worker exits instead of reconnecting (same symptom as celery/kombu#582).

The work-around turns that case into what it is, a connection error: kombu and celery ignore it while closing and
reconnect. Nothing is lost by skipping that restore: the unacknowledged messages are still in Redis's unacked
index (written when they were delivered) and are restored after the visibility timeout, and our tasks are
idempotent (redelivery is at-least-once by design).
"""
from __future__ import annotations

import kombu.transport
import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _create_client(self, asynchronous: bool = False):
        """One client per connection pool instead of a new `redis.Redis` per operation (kombu's way): building one
        copies ~170 response callbacks, about 5 % of a worker's CPU per task (bench/README.md, turn profile).
        redis-py clients are thread-safe; a new pool (after a connection loss) gets a new client."""
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self.__dict__.get("_wabot_client")
        if client is None or client.connection_pool is not self.pool:
            client = super()._create_client()
            self._wabot_client = client
        return client

    def _connparams(self, asynchronous: bool = False) -> dict:
        transport = self.connection
        if transport is None or transport.client is None:  # closed by Connection.collect(): see the module doc
            raise redis.exceptions.ConnectionError("the broker connection was closed after a connection loss")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make `redis://`, `rediss://` and `redis+socket://` broker URLs use this transport in this process. kombu takes
    the transport from the URL scheme (a `broker_transport` setting is ignored when the URL has one), so the alias
    table is the supported place to register it."""
    for scheme in ("redis", "rediss"):
        kombu.transport.TRANSPORT_ALIASES[scheme] = "workers.broker:Transport"
        kombu.transport._transport_cache.pop(scheme, None)  # resolved before install(): resolve again
