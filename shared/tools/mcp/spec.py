"""The `mcp_servers:` of a tenant, parsed and checked once when tenants.yaml is loaded.

    mcp_servers:
      - name: time                          # 1-24 letters, digits, '-' ('_' only alone): tools are `time__<tool>`
        command: mcp-server-time            # stdio: the server is started once per worker process
        args: ["--local-timezone", "Europe/Berlin"]
        env: {TIME_API_KEY: "${TIME_API_KEY}"}   # the only variables it gets besides PATH, HOME, USER, SHELL, ...
      - name: crm
        url: "https://mcp.crm.example/mcp"  # Streamable HTTP
        headers: {Authorization: "Bearer ${CRM_TOKEN}"}
        allow_tools: [find_customer, create_ticket]   # only these (default: all)
        deny_tools: [delete_customer]                 # never these
        user_argument: customer_phone       # the user's number goes in this argument (the model cannot set it)
        timeout_seconds: 10                 # per call, default 10
        max_result_chars: 4000              # what the model sees of a result, default 4000
        ping_seconds: 30                    # how often a live session is checked, default 30
        allow_private_network: false        # true only for servers on your own network (or 127.0.0.1)

Isolation: a stdio server gets the SDK's short list of harmless variables (PATH, HOME, ...) plus its own `env:`,
never the worker's environment, so it cannot read another tenant's (or the bot's) secrets; an HTTP server gets
its own `headers:` only. Every tenant has its own sessions, even for the same command or URL.
Errors name the tenant, the server and the field, never a header or env value.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import httpx2

from shared.config.http_tools import config_number, parse_named_list
from shared.errors import ConfigError, reject_unknown_keys

SERVER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_)){0,23}$")  # no "__": it separates server and tool
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
KEYS = {"name", "command", "args", "env", "url", "headers", "allow_tools", "deny_tools", "user_argument",
        "timeout_seconds", "max_result_chars", "ping_seconds", "allow_private_network"}
SEPARATOR = "__"


@dataclass(frozen=True)
class McpServerSpec:
    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    allow_tools: frozenset[str] | None = None   # None: every tool the server lists
    deny_tools: frozenset[str] = frozenset()
    user_argument: str | None = None
    timeout_seconds: float = 10.0
    max_result_chars: int = 4000
    ping_seconds: float = 30.0
    allow_private_network: bool = False

    def __repr__(self) -> str:  # env and headers hold secrets: never print them
        return f"McpServerSpec(name={self.name!r}, transport={self.transport!r})"

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "http"

    def offers(self, tool_name: str) -> bool:
        """Whether the tenant lets the model see the server's tool `tool_name` (allowlist, then denylist)."""
        if self.allow_tools is not None and tool_name not in self.allow_tools:
            return False
        return tool_name not in self.deny_tools


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of strings")
    return tuple(str(v) for v in value)


def _mapping(value: Any, where: str, key: str, names: re.Pattern) -> dict[str, str]:
    """A mapping of names to single-line values; errors never quote a value (they hold secrets)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a mapping")
    clean: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not names.match(name):
            raise ConfigError(f"{where}: {key} has an invalid name")
        if isinstance(item, bool) or not isinstance(item, (str, int, float)) or "\n" in str(item) \
                or "\r" in str(item) or "\x00" in str(item):
            raise ConfigError(f"{where}: {key}.{name} must be a single-line string")
        clean[name] = str(item)
    return clean


def _private_host(host: str) -> bool:
    if host in ("localhost", "localhost.") or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


def _check_url(url: Any, allow_private: bool, where: str) -> str:
    """http(s), a host, no credentials in it; a literal private or loopback host needs allow_private_network (a
    name is resolved and checked before each connection: shared.tools.mcp.hub.refuse_private_address)."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{where}: url must be a string")
    url = url.strip()
    try:  # parsed by httpx2, the library the SDK's Streamable HTTP client fetches it with
        parts = httpx2.URL(url)
        host = parts.host.lower()
    except (httpx2.InvalidURL, TypeError, ValueError):
        raise ConfigError(f"{where}: url is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ConfigError(f"{where}: url must start with http:// or https:// and name a host")
    if parts.userinfo:
        raise ConfigError(f"{where}: url may not carry user:password; put credentials in headers")
    if _private_host(host) and not allow_private:
        raise ConfigError(f"{where}: url points at a private or loopback address; set allow_private_network: true "
                          "if the server is on your own network")
    return url


def _transport(doc: Mapping[str, Any], where: str, allow_private: bool) -> dict[str, Any]:
    command, url = doc.get("command"), doc.get("url")
    if (command is None) == (url is None):
        raise ConfigError(f"{where}: give either command (a stdio server) or url (a Streamable HTTP server)")
    if command is not None:
        if not isinstance(command, str) or not command.strip():
            raise ConfigError(f"{where}: command must be a non-empty string")
        if doc.get("headers") is not None:
            raise ConfigError(f"{where}: headers are for url servers; a stdio server takes env")
        return {"command": command.strip(), "args": _strings(doc.get("args"), where, "args"),
                "env": _mapping(doc.get("env"), where, "env", ENV_NAME)}
    if doc.get("args") is not None or doc.get("env") is not None:
        raise ConfigError(f"{where}: args and env are for command servers; a url server takes headers")
    return {"url": _check_url(url, allow_private, where),
            "headers": _mapping(doc.get("headers"), where, "headers", HEADER_NAME)}


def parse_mcp_server(doc: Any, tenant_id: str, index: int) -> McpServerSpec:
    """Validate one entry of `mcp_servers`; errors name the tenant, the server and the field."""
    if not isinstance(doc, dict):
        raise ConfigError(f"tenant {tenant_id}: mcp_servers[{index}] must be a mapping")
    name = doc.get("name")
    if not isinstance(name, str) or not SERVER_NAME.match(name):
        raise ConfigError(f"tenant {tenant_id}: mcp_servers[{index}].name must be 1-24 letters, digits, '-' or "
                          "single '_'")
    where = f"tenant {tenant_id} mcp server {name}"
    reject_unknown_keys(doc, KEYS, where)
    allow_private = doc.get("allow_private_network", False)
    if not isinstance(allow_private, bool):
        raise ConfigError(f"{where}: allow_private_network must be true or false")
    user_argument = doc.get("user_argument")
    if user_argument is not None and (not isinstance(user_argument, str) or not ARG_NAME.match(user_argument)):
        raise ConfigError(f"{where}: user_argument must be an argument name")
    allow = doc.get("allow_tools")
    return McpServerSpec(
        name=name, **_transport(doc, where, allow_private),
        allow_tools=None if allow is None else frozenset(_strings(allow, where, "allow_tools")),
        deny_tools=frozenset(_strings(doc.get("deny_tools"), where, "deny_tools")),
        user_argument=user_argument,
        timeout_seconds=float(config_number(doc, "timeout_seconds", where, 10, 0.1, 300)),
        max_result_chars=config_number(doc, "max_result_chars", where, 4000, 100, 4000, whole=True),
        ping_seconds=float(config_number(doc, "ping_seconds", where, 30, 0.2, 3600)),
        allow_private_network=allow_private,
    )


def parse_mcp_servers(docs: Any, tenant_id: str) -> tuple[McpServerSpec, ...]:
    """Every entry of a tenant's `mcp_servers` (none when absent); ConfigError on the first bad one."""
    return parse_named_list(docs, tenant_id, "mcp_servers", "mcp server", parse_mcp_server)
