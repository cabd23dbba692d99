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
from typing import Any, Iterable, Mapping
from urllib.parse import quote

from shared.config.http_tools import (BODY_METHODS, DOT_SEGMENTS, PLACEHOLDER, USER_PHONE, HttpToolSpec,
                                      has_dot_segment, sample, template_query_keys)
from shared.safeurl import Origin, UnsafeURL, check_url
from shared.config.tenants import Tenant
from shared.tools.base import Tool, ToolAnnotations, ToolContext, ToolError
from shared.tools.netguard import FetchError, fetch

MAX_TEXT_CHARS = 4000           # text answers are cut here: the model needs the gist, not a whole page
MAX_ERROR_BODY_CHARS = 300
REDACTED = "[redacted]"
MIN_SECRET_PART = 8             # whitespace-separated parts of a header value this long are redacted on their own


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
        self._origin = check_url(sample(spec.url)).origin  # parse_http_tool has checked it already

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
    if has_dot_segment(url):  # e.g. `{a}{b}` with a="." and b="."; the declared url itself has none
        raise ToolError("the arguments would make a '.' or '..' segment of the URL path")
    try:
        checked = check_url(url, "the filled URL")
    except UnsafeURL as exc:
        raise ToolError(str(exc)) from None
    if origin is not None and checked.origin != origin:
        raise ToolError("the arguments would change the host of the tool's URL")
    return url


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


def parse_http_tools(tenant: Tenant) -> list[HttpTool]:
    """The tenant's HTTP tools, from the specs parsed and checked when tenants.yaml was loaded."""
    return [HttpTool(spec) for spec in tenant.http_tools]
