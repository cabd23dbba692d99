"""What a worker process needs, built once per process from validated settings and passed into domain code."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from shared.db.pools import TenantPools
from shared.infobip.client import InfobipClient
from shared.llm import LLMProvider, provider_for
from shared.outbox import client_for
from shared.settings import Settings, load_settings
from shared.tenants import Tenant, TenantRegistry, load_tenants


@dataclass
class Runtime:
    settings: Settings
    tenants: TenantRegistry
    pools: TenantPools = field(default_factory=TenantPools)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _llms: dict = field(default_factory=dict)
    _clients: dict = field(default_factory=dict)

    def llm(self, tenant: Tenant) -> LLMProvider:
        with self._lock:
            if tenant.tenant_id not in self._llms:
                self._llms[tenant.tenant_id] = provider_for(tenant.llm)
            return self._llms[tenant.tenant_id]

    def infobip(self, tenant: Tenant) -> InfobipClient:
        with self._lock:
            if tenant.tenant_id not in self._clients:
                self._clients[tenant.tenant_id] = client_for(tenant)
            return self._clients[tenant.tenant_id]


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                settings = load_settings()
                _runtime = Runtime(settings=settings, tenants=load_tenants(settings))
    return _runtime
