"""What a worker process needs, built once per process from validated settings and passed into domain code."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, partial

from shared.db.pools import TenantPools
from shared.delivery.infobip.client import InfobipClient
from shared.config.providers import ProviderCache
from shared.llm.breaker import Breakers
from shared.llm.factory import provider_for
from shared.memory.embedders import embedder_for
from shared.knowledge.store import store_for
from shared.memory.store import MemoryStore
from shared.memory.probe import probe_and_log
from shared.delivery.outbox import client_for
from shared.conversation.ratelimit import RateLimiter, tenant_limits
from shared.agents.registry import validate_agents
from shared.queueing.redis_conn import redis_client
from shared.config.settings import Settings, current_settings
from shared.config.tenants import Tenant, TenantRegistry, load_tenants
from shared.tools.registry import build_registry
from shared.conversation.turn import TurnDeps


MCP_START_WAIT_SECONDS = 10.0  # start-up waits this long, in all, for the MCP servers' first answers


@dataclass
class Runtime:
    settings: Settings
    tenants: TenantRegistry
    pools: TenantPools = field(default_factory=TenantPools)
    providers: ProviderCache = field(default_factory=ProviderCache)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _clients: dict = field(default_factory=dict)
    _memories: dict = field(default_factory=dict)
    # blue ticks and typing indicators, off the turn's lock and connection (shared.conversation.turn._acknowledge)
    background: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(8, "acknowledge"))

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
            llm_for=self.providers.get,
            registry_for=build_registry,
            memory_for=self.memory,
            knowledge_for=store_for,
            infobip_for=self.infobip,
            limiter=RateLimiter(self.settings.redis_url, redis_client(self.settings.redis_url)),
            background=self.background.submit,
        )

    def check(self) -> None:
        """Build every tenant's tools, agents and memory once at start-up so configuration errors surface now;
        then probe each embedder (pgvector tenants): a failing probe is logged as an error naming the tenant and
        the problem, and start-up goes on (memory uses full-text search until the embedder answers).
        Each tenant's MCP servers are connected (stdio servers started, once per process) and given up to
        MCP_START_WAIT_SECONDS in all to list their tools; one that is down is retried in the background, its
        tools not offered meanwhile (a warning names it): it never stops the worker."""

        registries = []
        for tenant in self.tenants:
            validate_agents(tenant)
            registries.append(build_registry(tenant))
            tenant_limits(tenant)
            self.memory(tenant)
        for registry in registries:
            registry.start()
        deadline = time.monotonic() + MCP_START_WAIT_SECONDS
        for registry in registries:
            registry.start(wait_seconds=max(0.01, deadline - time.monotonic()))
        probe_and_log(self.tenants, lambda tenant: self.memory(tenant).embedder)


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                settings = current_settings()
                # circuit state is shared by every worker process through Redis (shared.llm.breaker)
                breakers = Breakers(redis_client(settings.redis_url))
                _runtime = Runtime(settings=settings, tenants=load_tenants(settings),
                                   pools=TenantPools(max_size=settings.db_pool_max),
                                   providers=ProviderCache(build=partial(provider_for, breakers=breakers)))
    return _runtime
