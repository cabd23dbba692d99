"""MCP servers as tenant tools (issue 15).

- `spec`: the `mcp_servers:` of a tenant, parsed and checked once when tenants.yaml is loaded;
- `hub`: one asyncio loop per worker process, on a thread of its own, that owns every MCP session of the process
  (stdio server processes are started once per process and stopped with it) and is called into from any thread;
- `adapter`: each listed MCP tool as a tool of our registry (group "mcp", name `<server>__<tool>`).

This package knows nothing of the tenant's other settings; only `adapter` knows our Tool shape.
"""
