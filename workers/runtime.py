"""What a worker process needs, built once per process from validated settings and passed into domain code."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

from shared.db.pools import TenantPools
from shared.delivery.infobip.client import InfobipClient
from shared.config.providers import ProviderCache
from shared.memory.embedders import embedder_for
from shared.memory.store import MemoryStore
from shared.delivery.outbox import client_for, queue_reply, send_payload
from shared.queueing.publisher import RetryingPublisher
from shared.conversation.ratelimit import RateLimiter
from shared.queueing.redis_conn import redis_client
from shared.config.settings import Settings, load_settings
from shared.queueing.tasks import TASK_SEND, enqueue
from shared.config.tenants import Tenant, TenantRegistry, load_tenants
from shared.tools.registry import build_registry
from shared.conversation.turn import TurnDeps


@dataclass
class Runtime:
    settings: Settings
    tenants: TenantRegistry
    pools: TenantPools = field(default_factory=TenantPools)
    providers: ProviderCache = field(default_factory=ProviderCache)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _clients: dict = field(default_factory=dict)
    _memories: dict = field(default_factory=dict)
    _publisher: RetryingPublisher | None = None

    def infobip(self, tenant: Tenant) -> InfobipClient:
        with self._lock:
            if tenant.tenant_id not in self._clients:
                self._clients[tenant.tenant_id] = client_for(tenant)
            return self._clients[tenant.tenant_id]

    def memory(self, tenant: Tenant) -> MemoryStore:
        with self._lock:
            if tenant.tenant_id not in self._memories:
                # sql_fallback tenants never embed: they need no embedding provider (nor its key)
                embedder = None if tenant.vector_store == "sql_fallback" else embedder_for(tenant)
                self._memories[tenant.tenant_id] = MemoryStore(tenant, embedder)
            return self._memories[tenant.tenant_id]

    @cached_property
    def turn_deps(self) -> TurnDeps:
        return TurnDeps(
            pools=self.pools,
            llm_for=self.providers.get,
            registry_for=build_registry,
            memory_for=self.memory,
            queue_reply=queue_reply,
            infobip_for=self.infobip,
            limiter=RateLimiter(self.settings.redis_url, redis_client(self.settings.redis_url)),
        )

    @property
    def publisher(self) -> RetryingPublisher:
        """Publishes after a commit; while Redis is away it keeps retrying in the background (shared/queueing/publisher.py).
        One per process, so one backlog and one retrying thread."""
        with self._lock:
            if self._publisher is None:
                from workers.app import app

                self._publisher = RetryingPublisher(
                    lambda task, payload, countdown: enqueue(app, task, payload, countdown))
            return self._publisher

    def publish_sends(self, tenant_id: str, outbound_ids: list[int], request_id: str | None,
                      message_id: str | None = None) -> None:
        """Publish sends whose outbox rows are committed (never before the commit). Never raises for a broker
        outage: the publisher retries, and the rows are durable for the recovery sweep anyway."""
        for outbound_id in outbound_ids:
            self.publisher.publish(TASK_SEND, send_payload(tenant_id, outbound_id, request_id, message_id))

    def check(self) -> None:
        """Build every tenant's tools, agents and memory once at start-up so configuration errors surface now."""
        from shared.agents.registry import validate_agents
        from shared.conversation.ratelimit import tenant_limits

        for tenant in self.tenants:
            validate_agents(tenant)
            build_registry(tenant)
            tenant_limits(tenant)
            self.memory(tenant)


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                settings = load_settings()
                _runtime = Runtime(settings=settings, tenants=load_tenants(settings),
                                   pools=TenantPools(max_size=settings.db_pool_max))
    return _runtime
