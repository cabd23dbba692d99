"""Per-tenant HTTP tools, declared in tenants.yaml under `http_tools:` (one tool each, group "http").

    http_tools:
      - name: get_weather
        description: Current weather for a city
        method: GET                                     # GET | POST | PUT | PATCH | DELETE
        url: "https://api.weather.example/v1/current?city={city}"
        parameters: {type: object, properties: {city: {type: string}}, required: [city]}
        headers: {X-Api-Key: "${WEATHER_API_KEY}"}     # secrets come from the environment
        timeout_seconds: 5                              # whole exchange, default 10, at most 60
        allow_private_network: false                    # true only for APIs on your own network
        max_response_bytes: 65536                       # default 65536, at most 10 MiB
        max_redirects: 3                                # same-host redirects followed, 0..3

`{placeholders}` in the URL's path and query are filled URL-encoded from the arguments of the same name (never in
the scheme, host or port: the model cannot choose where the request goes). A value that is `.` or `..` is refused
(it would climb out of the declared path once the path is normalised). The other arguments go to the query
string (GET/DELETE) or a JSON body (POST/PUT/PATCH). Network guarantees: see `shared.tools.netguard`.

`{user_phone}` is reserved: the server fills it with the WhatsApp number of the user the turn belongs to (digits,
country code first, no '+'), so a business API can be bound to the caller:

        url: "https://crm.example/v1/customers/{user_phone}/orders"

It is never taken from the model's arguments (an argument of that name is refused), is not part of the tool's
schema, and may not be declared in `parameters`.

The model can send only the declared parameters: the schema the model sees says `additionalProperties: false`
(a tool may not declare otherwise), and `invoke` refuses any undeclared argument again. No argument may repeat a
query key the url already has (`?phone={user_phone}&units=metric`: neither `phone` nor `units` can be a
parameter), so a model-chosen value never sits next to a server-bound one in the query string, where many APIs
would read the last one. The url is checked at start-up and again after the placeholders are filled with the
parser that sends it (shared.safeurl): no backslash, `user:pass@`, spaces, control characters or host confusion,
and the filled URL must keep the declared scheme, host and port.

Header values never appear in results, errors or logs: they are not put in messages, and any echo of them in a
response is replaced by "[redacted]" (the whole value, and each whitespace-separated part of 8 characters or
more, so the token of `Authorization: Bearer <token>` is redacted when an API quotes it alone).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, quote, urlsplit

from shared.errors import ConfigError, reject_unknown_keys
from shared.safeurl import Origin, UnsafeURL, check_url
from shared.config.tenants import Tenant
from shared.tools.base import Tool, ToolAnnotations, ToolContext, ToolError
from shared.tools.netguard import FetchError, fetch
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
MIN_SECRET_PART = 8             # whitespace-separated parts of a header value this long are redacted on their own


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


class HttpTool(Tool):
    """One declared API endpoint as a tool; stateless, so one instance serves every thread."""

    group = "http"

    def __init__(self, spec: HttpToolSpec):
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.input_schema = spec.parameters  # with additionalProperties: false (parse_http_tool sees to it)
        self.annotations = ToolAnnotations(readOnlyHint=spec.method == "GET",
                                           destructiveHint=spec.method == "DELETE", openWorldHint=True)
        self._placeholders = tuple(p for p in dict.fromkeys(PLACEHOLDER.findall(spec.url)) if p != USER_PHONE)
        self._binds_user = USER_PHONE in PLACEHOLDER.findall(spec.url)
        self._secrets = secret_parts(spec.headers.values())
        self._declared = frozenset((spec.parameters.get("properties") or {}))
        self._query_keys = template_query_keys(spec.url)
        self._origin = check_url(_sample(spec.url)).origin  # parse_http_tool has checked it already

    def __repr__(self) -> str:
        return f"HttpTool({self.name!r})"

    def invoke(self, ctx: ToolContext, args: dict[str, Any]) -> Any:
        spec = self.spec
        if USER_PHONE in args:
            raise ToolError(f"{self.name}: {USER_PHONE} is filled in by the server; do not pass it")
        # Guarantee: only declared arguments get here, whatever the schema says (the registry validated it too),
        # and none of them can add a second value for a query key the url fixes (server-bound or literal).
        unknown = sorted(set(args) - self._declared)
        if unknown:
            raise ToolError(f"{self.name}: unknown argument(s) {', '.join(unknown)[:200]}; "
                            f"this tool takes only: {', '.join(sorted(self._declared)) or 'no arguments'}")
        server_values: dict[str, str] = {}
        if self._binds_user:
            if not ctx.user_phone:
                raise ToolError(f"{self.name}: the user's phone number is not known, so this tool cannot be used")
            server_values[USER_PHONE] = str(ctx.user_phone)
        url = build_url(spec.url, args, self._placeholders, server_values, origin=self._origin)
        rest = {k: v for k, v in args.items() if k not in self._placeholders}
        clash = sorted(k for k in rest if k in self._query_keys)
        if clash and spec.method not in BODY_METHODS:
            raise ToolError(f"{self.name}: argument(s) {', '.join(clash)} would repeat a query key of the "
                            "tool's URL; the server sets those")
        params, body = (None, rest) if spec.method in BODY_METHODS else (_query_params(rest), None)
        try:
            fetched = fetch(spec.method, url, headers=spec.headers, params=params, json_body=body,
                            timeout=spec.timeout_seconds, max_bytes=spec.max_response_bytes,
                            allow_private=spec.allow_private_network, max_redirects=spec.max_redirects)
        except FetchError as exc:
            raise ToolError(self.redact(f"{self.name}: {exc}")) from None
        text = fetched.body.decode(fetched.encoding or "utf-8", errors="replace")
        if not 200 <= fetched.status < 300:
            snippet = self.redact(text)[:MAX_ERROR_BODY_CHARS].strip()  # redact first: no half secret at the cut
            raise ToolError(f"{self.name}: the API answered HTTP {fetched.status}"
                            + (f": {snippet}" if snippet else ""))
        if "json" in fetched.content_type.lower():
            try:
                return self.redact(json.loads(text))
            except ValueError:
                pass  # a server that mislabels text: fall through and return it as text
        truncated = len(text) > MAX_TEXT_CHARS
        return {"text": self.redact(text)[:MAX_TEXT_CHARS], "truncated": truncated}

    def redact(self, value: Any) -> Any:
        """Replace every header value (API keys), and its long parts, echoed back in `value`, at any depth."""
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, list):
            return [self.redact(v) for v in value]
        if isinstance(value, dict):
            return {self.redact(k): self.redact(v) for k, v in value.items()}
        return value


def secret_parts(values: Iterable[str]) -> tuple[str, ...]:
    """What redaction replaces: each header value (4+ characters) and each whitespace-separated part of one that
    is MIN_SECRET_PART+ characters long; longest first, so a whole value goes before its parts."""
    secrets: set[str] = set()
    for value in values:
        value = str(value)
        if len(value.strip()) >= 4:
            secrets.add(value.strip())
        secrets.update(part for part in value.split() if len(part) >= MIN_SECRET_PART)
    return tuple(sorted(secrets, key=lambda v: (-len(v), v)))


def build_url(template: str, args: Mapping[str, Any], placeholders: tuple[str, ...],
              server_values: Mapping[str, str] | None = None, *, origin: Origin | None = None) -> str:
    """Fill the placeholders, each URL-encoded as a whole (a '/' or '?' in a value cannot change the path).

    `placeholders` come from `args` (the model's); `server_values` (the reserved `{user_phone}`) from the server.
    A value that is `.` or `..`, or placeholders that together make such a path segment, are refused: the HTTP
    stack would normalise the path and leave the declared prefix (`/v1/customers/../orders` is `/v1/orders`).
    The filled URL is checked with the parser that sends it and must keep `origin` (the declared one) when given:
    the values are URL-encoded whole, so this is a second lock on the same door.
    """
    values = {}
    for name in placeholders:
        if name not in args:
            raise ToolError(f"missing argument {name!r}")
        value = args[name]
        if isinstance(value, (dict, list)) or value is None:
            raise ToolError(f"argument {name!r} must be a string or a number")
        text = _scalar(value)
        if text in DOT_SEGMENTS:
            raise ToolError(f"argument {name!r} may not be '.' or '..'")
        values[name] = quote(text, safe="")
    for name, text in (server_values or {}).items():
        if text in DOT_SEGMENTS:
            raise ToolError(f"{name} may not be '.' or '..'")
        values[name] = quote(text, safe="")
    url = PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    if _has_dot_segment(url):  # e.g. `{a}{b}` with a="." and b="."; the declared url itself has none
        raise ToolError("the arguments would make a '.' or '..' segment of the URL path")
    try:
        checked = check_url(url, "the filled URL")
    except UnsafeURL as exc:
        raise ToolError(str(exc)) from None
    if origin is not None and checked.origin != origin:
        raise ToolError("the arguments would change the host of the tool's URL")
    return url


def template_query_keys(template: str) -> frozenset[str]:
    """The query keys the declared url sets itself (decoded: `ph%6Fne` is `phone` to the API too)."""
    query = urlsplit(template).query
    return frozenset(key for key, _ in parse_qsl(query, keep_blank_values=True))


def _sample(template: str) -> str:
    """The url with every placeholder filled by a harmless value, to check the declared parts of it."""
    return PLACEHOLDER.sub("x", template)


def _has_dot_segment(url: str) -> bool:
    return any(segment in DOT_SEGMENTS for segment in urlsplit(url).path.split("/"))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _query_params(args: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Scalars as `k=v`, lists as repeated keys, objects as JSON text; None is left out."""
    params: list[tuple[str, str]] = []
    for key, value in args.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item is None:
                continue
            params.append((key, json.dumps(item) if isinstance(item, (dict, list)) else _scalar(item)))
    return params


def _number(doc: Mapping[str, Any], key: str, where: str, default: float, lo: float, hi: float,
            whole: bool = False) -> Any:
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
        check_url(_sample(url), "url")  # the parser that sends it: no backslash, userinfo or host confusion
    except UnsafeURL as exc:
        raise ConfigError(f"{where}: {exc}" + ("; put credentials in headers" if "password" in str(exc) else "")) \
            from None
    if _has_dot_segment(url):
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


def parse_http_tool(doc: Any, tenant_id: str, index: int) -> HttpTool:
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
    return HttpTool(HttpToolSpec(
        name=name, description=description.strip(), method=method, url=url, parameters=parameters,
        headers=headers,
        timeout_seconds=float(_number(doc, "timeout_seconds", where, 10, 0.01, 60)),
        allow_private_network=allow_private,
        max_response_bytes=_number(doc, "max_response_bytes", where, 65536, 1, 10 * 1024 * 1024, whole=True),
        max_redirects=_number(doc, "max_redirects", where, 3, 0, 3, whole=True),
    ))


def parse_http_tools(tenant: Tenant) -> list[HttpTool]:
    """The tenant's declared HTTP tools (none when `http_tools` is absent); ConfigError on any bad entry."""
    docs = (tenant.raw or {}).get("http_tools")
    if docs is None:
        return []
    if not isinstance(docs, list):
        raise ConfigError(f"tenant {tenant.tenant_id}: http_tools must be a list")
    tools: list[HttpTool] = []
    seen: set[str] = set()
    for index, doc in enumerate(docs):
        tool = parse_http_tool(doc, tenant.tenant_id, index)
        if tool.name in seen:
            raise ConfigError(f"tenant {tenant.tenant_id} http tool {tool.name}: name is used twice")
        seen.add(tool.name)
        tools.append(tool)
    return tools
