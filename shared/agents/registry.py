"""The agents a tenant may enable. Adding an agent: one module with a class like DbAgent, plus an entry here."""
from __future__ import annotations

from shared.agents.base import Agent
from shared.agents.db_agent import DbAgent
from shared.agents.http_agent import HttpAgent
from shared.agents.mcp_agent import McpAgent
from shared.agents.orchestrator import Orchestrator
from shared.errors import ConfigError
from shared.config.tenants import Tenant

SPECIALISTS: dict[str, type] = {
    "db_agent": DbAgent,
    "http_agent": HttpAgent,
    "mcp_agent": McpAgent,
}
KNOWN = {"orchestrator", *SPECIALISTS}


def validate_agents(tenant: Tenant) -> None:
    unknown = [a for a in tenant.enabled_agents if a not in KNOWN]
    if unknown:
        raise ConfigError(f"tenant {tenant.tenant_id}: enabled_agents names unknown agent(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(KNOWN))})")


def orchestrator_for(tenant: Tenant) -> Orchestrator:
    """The tenant's entry point: the orchestrator over the specialised agents it enabled (and may use)."""
    validate_agents(tenant)
    agents: list[Agent] = []
    names = list(tenant.enabled_agents)
    if tenant.mcp_servers and "mcp_agent" not in names:
        names.append("mcp_agent")  # declaring MCP servers is asking for their tools to be offered
    for name in names:
        cls = SPECIALISTS.get(name)
        if cls is None:
            continue
        agent = cls()
        if agent.allowed_tenants is None or tenant.tenant_id in agent.allowed_tenants:
            agents.append(agent)
    return Orchestrator(agents)
