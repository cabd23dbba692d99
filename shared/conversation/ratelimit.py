"""Per-user and per-tenant rate limits (moving windows in Redis, via the `limits` package).

A user flooding the bot gets one notice per window; the rest of the messages are stored but not answered.
The limits are per tenant (`config.rate_limit_user`, `config.rate_limit_tenant`, in `limits` notation such as
"20/minute") and shared by every worker process and host.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from shared.queueing.redis_conn import limits_url
from shared.config.tenants import Tenant

NOTICE = "You're sending messages faster than I can answer. I'll read the rest, but please wait a moment."


def tenant_limits(tenant: Tenant) -> tuple[object, object]:
    """The tenant's per-user and per-tenant limits (their notation was checked when the tenants file was read)."""
    return parse(tenant.config.rate_limit_user), parse(tenant.config.rate_limit_tenant)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    scope: str | None = None   # "user" or "tenant" when refused
    notify: bool = False       # True once per window: send the user the notice


class RateLimiter:
    def __init__(self, redis_url: str, client: redis.Redis):
        self._limiter = MovingWindowRateLimiter(storage_from_string(limits_url(redis_url)))
        self._redis = client

    def check(self, tenant: Tenant, phone: str) -> Verdict:
        per_user, per_tenant = tenant_limits(tenant)
        # The user's own window first: a flooding user's refused messages must not use up the tenant's window
        # and silence everybody else.
        if not self._limiter.hit(per_user, "wabot-user", tenant.tenant_id, phone):
            return self._refused(tenant, phone, "user", per_user)
        if not self._limiter.hit(per_tenant, "wabot-tenant", tenant.tenant_id):
            return self._refused(tenant, phone, "tenant", per_tenant)
        return Verdict(True)

    def _refused(self, tenant: Tenant, phone: str, scope: str, limit) -> Verdict:
        first = self._redis.set(f"wabot:rl-notice:{tenant.tenant_id}:{phone}", "1", nx=True,
                                ex=int(limit.get_expiry()))
        return Verdict(False, scope, bool(first))
