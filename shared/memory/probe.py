"""The embedder probe: embed one short text per tenant, at worker start-up and in `wabot check`.

It reports the dimension the model answers and how long it took, or the problem in words (never a secret). Only
tenants in pgvector mode are probed (`sql_fallback` tenants never embed). The probes of all tenants run at the
same time, each in a daemon thread, and `probe_all` waits at most `timeout` seconds for all of them: a hung
embedding server costs start-up that long once, not once per tenant.

At worker start-up a failing probe is an error in the log, not a reason to stop: memory then works with full-text
search (shared.memory.store) until the embedder answers again.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from shared.config.tenants import Tenant
from shared.memory.embedders import DimensionMismatch, Embedder, embedder_for
from shared.memory.store import EMBEDDER_FAILURES, embedder_problem

log = logging.getLogger(__name__)

PROBE_TEXT = "Dentist appointment on Friday at 2 PM"
PROBE_TIMEOUT = 10.0  # seconds for all tenants together


@dataclass(frozen=True)
class ProbeResult:
    tenant_id: str
    model: str
    ok: bool
    dim: int | None = None          # what the model answered (also when it does not fit the column)
    latency_ms: int | None = None
    problem: str | None = None      # None when ok

    def describe(self) -> str:
        """One line for people: `embeddings <model>: dim=640 latency=12ms` or the problem."""
        if self.ok:
            return f"embeddings {self.model}: dim={self.dim} latency={self.latency_ms}ms"
        return f"embedding probe failed: {self.problem}"


def probe_embedder(tenant: Tenant, embedder: Embedder | None = None,
                   clock: Callable[[], float] = time.perf_counter) -> ProbeResult:
    """Embed PROBE_TEXT with the tenant's embedder (built from the tenant when not given)."""
    model, column = tenant.embedding_model, tenant.embedding_dim
    started = clock()
    try:
        embedder = embedder_for(tenant) if embedder is None else embedder
        vectors = embedder.embed([PROBE_TEXT])
    except DimensionMismatch as exc:
        return ProbeResult(tenant.tenant_id, model, False, exc.model_dim, _ms(clock() - started),
                           embedder_problem(tenant, exc))
    except EMBEDDER_FAILURES as exc:
        return ProbeResult(tenant.tenant_id, model, False, None, _ms(clock() - started),
                           embedder_problem(tenant, exc))
    latency = _ms(clock() - started)
    if len(vectors) != 1:
        return ProbeResult(tenant.tenant_id, model, False, None, latency,
                           f"embedding model {model!r} answered {len(vectors)} vectors for 1 text")
    dim = len(vectors[0])
    if dim != column:
        return ProbeResult(tenant.tenant_id, model, False, dim, latency,
                           embedder_problem(tenant, DimensionMismatch(model, dim, column)))
    return ProbeResult(tenant.tenant_id, model, True, dim, latency)


def probe_all(tenants: Iterable[Tenant], embedder_of: Callable[[Tenant], Embedder | None] | None = None,
              timeout: float = PROBE_TIMEOUT) -> list[ProbeResult]:
    """Probe every tenant not in `sql_fallback` at once; results in the tenants' order. A probe still running
    after `timeout` seconds is a failure ("no answer within ...")."""
    tenants = [t for t in tenants if t.vector_store != "sql_fallback"]
    results: dict[str, ProbeResult] = {}

    def run(tenant: Tenant) -> None:
        try:
            embedder = embedder_of(tenant) if embedder_of is not None else None
            results[tenant.tenant_id] = probe_embedder(tenant, embedder)
        except Exception as exc:  # noqa: BLE001 - a probe must never take its caller down
            results[tenant.tenant_id] = ProbeResult(tenant.tenant_id, tenant.embedding_model, False,
                                                    problem=embedder_problem(tenant, exc))

    threads = [threading.Thread(target=run, args=(t,), name=f"embed-probe-{t.tenant_id}", daemon=True)
               for t in tenants]
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [results.get(t.tenant_id) or ProbeResult(t.tenant_id, t.embedding_model, False, problem=(
        f"embedding model {t.embedding_model!r} gave no answer within {timeout:g} s")) for t in tenants]


def probe_and_log(tenants: Iterable[Tenant], embedder_of: Callable[[Tenant], Embedder | None] | None = None,
                  timeout: float = PROBE_TIMEOUT) -> list[ProbeResult]:
    """`probe_all`, each result logged: info when ok, an error naming the tenant and the problem otherwise."""
    results = probe_all(tenants, embedder_of, timeout)
    for r in results:
        fields = {"tenant_id": r.tenant_id, "embedding_model": r.model, "dim": r.dim, "latency_ms": r.latency_ms}
        if r.ok:
            log.info("embedding probe ok for tenant %s: %s", r.tenant_id, r.describe(), extra=fields)
        else:
            log.error("embedding probe failed for tenant %s: %s; memory uses full-text search until the "
                      "embedder answers", r.tenant_id, r.problem, extra={**fields, "problem": r.problem})
    return results


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))
