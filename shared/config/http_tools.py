"""The `http_tools:` of a tenant, parsed and checked once when tenants.yaml is loaded (shared/tools/http.py turns
each spec into a tool). Errors name the tenant, the tool and the field, never a header value."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, urlsplit

from shared.errors import ConfigError, reject_unknown_keys
from shared.safeurl import UnsafeURL, check_url
from shared.tools.schema import object_schema_problem

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")          # what OpenAI accepts as a function name
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BODY_METHODS = ("POST", "PUT", "PATCH")
KEYS = {"name", "description", "method", "url", "parameters", "headers", "timeout_seconds",
        "allow_private_network", "max_response_bytes", "max_redirects"}
MAX_TEXT_CHARS = 4000           # text answers are cut here: the model needs the gist, not a whole page
MAX_ERROR_BODY_CHARS = 300
REDACTED = "[redacted]"
USER_PHONE = "user_phone"       # reserved placeholder: filled by the server from ctx.user_phone
DOT_SEGMENTS = (".", "..")


@dataclass(frozen=True)
class HttpToolSpec:
    name: str
    description: str
    method: str
    url: str
    parameters: Mapping[str, Any]
    headers: Mapping[str, str]
    timeout_seconds: float
    allow_private_network: bool
    max_response_bytes: int
    max_redirects: int

    def __repr__(self) -> str:  # headers hold secrets: never print them
        return f"HttpToolSpec(name={self.name!r}, method={self.method!r})"


def template_query_keys(template: str) -> frozenset[str]:
    """The query keys the declared url sets itself (decoded: `ph%6Fne` is `phone` to the API too)."""
    query = urlsplit(template).query
    return frozenset(key for key, _ in parse_qsl(query, keep_blank_values=True))


def sample(template: str) -> str:
    """The url with every placeholder filled by a harmless value, to check the declared parts of it."""
    return PLACEHOLDER.sub("x", template)


def has_dot_segment(url: str) -> bool:
    return any(segment in DOT_SEGMENTS for segment in urlsplit(url).path.split("/"))


def config_number(doc: Mapping[str, Any], key: str, where: str, default: float, lo: float, hi: float,
                  whole: bool = False) -> Any:
    """`doc[key]` (default when absent), a number between lo and hi; ConfigError naming `where` and `key`."""
    value = doc.get(key, default)
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not lo <= value <= hi:
        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"{where}: {key} must be {kind} between {lo} and {hi}")
    return value


def _check_url(url: Any, where: str) -> str:
    """The tool's URL template: http(s), placeholders only in the path and query, no host confusion."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{where}: url must be a string")
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"{where}: url is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(f"{where}: url must start with http:// or https://")
    if "{" in parts.netloc or "}" in parts.netloc:
        raise ConfigError(f"{where}: url may not have placeholders in the host or port")
    try:
        check_url(sample(url), "url")  # the parser that sends it: no backslash, userinfo or host confusion
    except UnsafeURL as exc:
        raise ConfigError(f"{where}: {exc}" + ("; put credentials in headers" if "password" in str(exc) else "")) \
            from None
    if has_dot_segment(url):
        raise ConfigError(f"{where}: url may not have '.' or '..' path segments")
    if "{" in PLACEHOLDER.sub("", url) or "}" in PLACEHOLDER.sub("", url):
        raise ConfigError(f"{where}: url has a malformed placeholder (use {{name}} with letters, digits, '_')")
    return url


def _check_parameters(doc: dict, url: str, method: str, where: str) -> dict:
    """The JSON Schema the model fills: closed (no extra properties), every url placeholder required, nothing
    that could repeat a query key of the url or the server-bound {user_phone}."""
    parameters = doc.get("parameters", {"type": "object", "properties": {}})
    problem = object_schema_problem(parameters)
    if problem:
        raise ConfigError(f"{where}: parameters {problem}")
    if parameters.get("additionalProperties", False) is not False:
        raise ConfigError(f"{where}: parameters.additionalProperties must be false: the model may send only the "
                          "declared parameters")
    parameters = {**parameters, "additionalProperties": False}
    properties = parameters.get("properties") or {}
    required = set(parameters.get("required") or [])
    if method not in BODY_METHODS:
        for key in sorted(template_query_keys(url) & set(properties)):
            if f"{{{key}}}" not in url:
                raise ConfigError(f"{where}: parameters.properties.{key} would repeat the url's query key {key}; "
                                  "rename the parameter or drop it from the url")
    if USER_PHONE in properties:
        raise ConfigError(f"{where}: parameters.properties may not declare {USER_PHONE}: it is reserved, and "
                          f"{{{USER_PHONE}}} in the url is filled by the server with the caller's number")
    for placeholder in PLACEHOLDER.findall(url):
        if placeholder == USER_PHONE:
            continue  # filled by the server, never by the model
        if placeholder not in properties:
            raise ConfigError(f"{where}: url placeholder {{{placeholder}}} is not in parameters.properties")
        if placeholder not in required:
            raise ConfigError(f"{where}: url placeholder {{{placeholder}}} must be listed in parameters.required")
    return parameters


def _check_headers(headers: Any, where: str) -> dict[str, str]:
    """Header names as HTTP allows them, single-line values (errors never quote a value: they hold secrets)."""
    if not isinstance(headers, dict):
        raise ConfigError(f"{where}: headers must be a mapping of header name to value")
    clean: dict[str, str] = {}
    for key, value in headers.items():
        if not isinstance(key, str) or not re.match(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", key):
            raise ConfigError(f"{where}: headers has an invalid header name")
        if isinstance(value, bool) or not isinstance(value, (str, int)) or "\n" in str(value) or "\r" in str(value):
            raise ConfigError(f"{where}: headers.{key} must be a single-line string")
        clean[key] = str(value)
    return clean


def parse_http_tool(doc: Any, tenant_id: str, index: int) -> HttpToolSpec:
    """Validate one entry of `http_tools`; errors name the tenant, the tool and the field, never a header value."""
    if not isinstance(doc, dict):
        raise ConfigError(f"tenant {tenant_id}: http_tools[{index}] must be a mapping")
    name = doc.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"tenant {tenant_id}: http_tools[{index}].name must be 1-64 letters, digits, '_' or '-'")
    where = f"tenant {tenant_id} http tool {name}"
    reject_unknown_keys(doc, KEYS, where)
    description = doc.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ConfigError(f"{where}: description must be a non-empty string (the model chooses tools by it)")
    method = doc.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise ConfigError(f"{where}: method must be one of {', '.join(METHODS)}")
    method = method.upper()
    url = _check_url(doc.get("url"), where)
    parameters = _check_parameters(doc, url, method, where)
    headers = _check_headers(doc.get("headers") or {}, where)
    allow_private = doc.get("allow_private_network", False)
    if not isinstance(allow_private, bool):
        raise ConfigError(f"{where}: allow_private_network must be true or false")
    return HttpToolSpec(
        name=name, description=description.strip(), method=method, url=url, parameters=parameters,
        headers=headers,
        timeout_seconds=float(config_number(doc, "timeout_seconds", where, 10, 0.01, 60)),
        allow_private_network=allow_private,
        max_response_bytes=config_number(doc, "max_response_bytes", where, 65536, 1, 10 * 1024 * 1024, whole=True),
        max_redirects=config_number(doc, "max_redirects", where, 3, 0, 3, whole=True),
    )


def parse_named_list(docs: Any, tenant_id: str, key: str, label: str,
                     parse_one: Callable[[Any, str, int], Any]) -> tuple:
    """Every entry of a tenant's list `key` parsed by `parse_one(doc, tenant_id, index)` (none when absent), each
    with a `name` used once; ConfigError on the first bad one."""
    if docs is None:
        return ()
    if not isinstance(docs, list):
        raise ConfigError(f"tenant {tenant_id}: {key} must be a list")
    specs: list = []
    for index, doc in enumerate(docs):
        spec = parse_one(doc, tenant_id, index)
        if spec.name in {s.name for s in specs}:
            raise ConfigError(f"tenant {tenant_id} {label} {spec.name}: name is used twice")
        specs.append(spec)
    return tuple(specs)


def parse_http_tool_specs(docs: Any, tenant_id: str) -> tuple[HttpToolSpec, ...]:
    """Every entry of a tenant's `http_tools` (none when absent); ConfigError on the first bad one."""
    return parse_named_list(docs, tenant_id, "http_tools", "http tool", parse_http_tool)
