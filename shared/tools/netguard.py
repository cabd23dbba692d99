"""Outbound HTTP for tenant-declared tools, with the guards a URL the model helps to build needs.

Guarantees of `fetch`:
- only `origin` (scheme, host, port) is contacted: redirects to another origin are refused, same-origin ones are
  followed at most `max_redirects` times. The URL and every `Location` are parsed by the parser that sends them
  (shared.safeurl: requests' prepare_url + urllib3's parse_url) and a backslash, `user:pass@`, spaces, control
  characters or any host confusion is refused before a byte is sent, so the tool's secret headers reach no other
  host;
- unless `allow_private`, the address we actually connect to is checked (after our own DNS lookup, on the socket
  we then use), so a name resolving to a loopback/private/link-local/multicast/reserved address is refused even
  when it only does so at connect time (DNS rebinding);
- at most `max_bytes` of (decoded) body are read, then the response is dropped: a huge answer cannot fill memory;
- the whole exchange has a deadline of `timeout` seconds (connect, each read, and the total);
- proxies and .netrc from the environment are ignored (`trust_env = False`).
Failures raise `FetchError` whose message never contains the URL, header values or the exception text of the
HTTP stack (those may carry secrets).
"""
from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any, Mapping

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as u3conn

from shared.safeurl import UnsafeURL, check_redirect, check_url

REDIRECT_CODES = (301, 302, 303, 307, 308)
_CHUNK = 16 * 1024


class FetchError(Exception):
    """The request failed in a way the model may read: timed out, refused, too large, bad status ..."""

    def __init__(self, message: str, status: int | None = None, body: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = body


class BlockedAddress(Exception):
    """Raised from inside urllib3 before any byte is sent; deliberately not an OSError so no retry wraps it."""


@dataclass(frozen=True)
class Fetched:
    status: int
    content_type: str
    body: bytes
    encoding: str | None


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) as requests will connect, default port filled in; UnsafeURL on an ambiguous URL."""
    origin = check_url(url).origin
    return origin.scheme, origin.host, origin.port


def is_blocked_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for every address that is not plainly public: loopback, private, link-local, multicast, reserved ..."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return is_blocked_ip(ip.ipv4_mapped)
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified)


class _GuardedConnectionMixin:
    """Resolve once, refuse if any address is not public, then connect to exactly the addresses we checked."""

    def _new_conn(self) -> socket.socket:  # overrides urllib3's private hook (present since urllib3 1.x)
        host, port = self._dns_host.strip("[]"), self.port  # type: ignore[attr-defined]
        try:
            infos = socket.getaddrinfo(host, port, u3conn.allowed_gai_family(), socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[attr-defined, arg-type]
        addresses = [info[4][0].split("%")[0] for info in infos]
        if not addresses or any(is_blocked_ip(ipaddress.ip_address(a)) for a in addresses):
            raise BlockedAddress()
        last: OSError | None = None
        for address in dict.fromkeys(addresses):
            try:
                # An IP literal: no second DNS lookup that could answer differently (DNS rebinding).
                sock = u3conn.create_connection((address, port), self.timeout,  # type: ignore[attr-defined]
                                                source_address=self.source_address,  # type: ignore[attr-defined]
                                                socket_options=self.socket_options)  # type: ignore[attr-defined]
            except TimeoutError as exc:
                raise ConnectTimeoutError(self, "connect timed out") from exc
            except OSError as exc:
                last = exc
                continue
            if is_blocked_ip(ipaddress.ip_address(sock.getpeername()[0].split("%")[0])):
                sock.close()
                raise BlockedAddress()
            return sock
        raise NewConnectionError(self, "failed to establish a new connection") from last  # type: ignore[arg-type]


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


def _session(allow_private: bool) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy or .netrc from the environment: we contact the declared host directly
    if not allow_private:
        adapter = _GuardedAdapter(max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


def _read_capped(response: requests.Response, max_bytes: int, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"the response is larger than the limit of {max_bytes} bytes")
    body = bytearray()
    for chunk in response.iter_content(_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise FetchError(f"the response is larger than the limit of {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise FetchError("the API did not answer in time")
    return bytes(body)


def fetch(method: str, url: str, *, headers: Mapping[str, str], params: Mapping[str, Any] | None = None,
          json_body: Any = None, timeout: float, max_bytes: int, allow_private: bool = False,
          max_redirects: int = 3, data: bytes | None = None) -> Fetched:
    """Send one request to `url`'s origin and return the body (any status); see the module docstring. `data`: a
    body sent byte for byte (a signed webhook), instead of `json_body`."""
    try:
        current = check_url(url)
    except UnsafeURL as exc:  # names the rule only: the URL may carry secrets
        raise FetchError(f"the tool's URL was refused: {exc}") from None
    origin = current.origin
    deadline = time.monotonic() + timeout
    session = _session(allow_private)
    try:
        for _ in range(max_redirects + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError("the API did not answer in time")
            try:
                response = session.request(method, current.url, headers=dict(headers), params=params,
                                           json=json_body, data=data,
                                           timeout=(remaining, remaining), allow_redirects=False, stream=True)
            except BlockedAddress:
                raise FetchError("the API's address is private or reserved; "
                                 "this tool is not allowed to contact it") from None
            except requests.Timeout:
                raise FetchError("the API did not answer in time") from None
            except requests.RequestException as exc:
                raise FetchError(f"could not reach the API ({exc.__class__.__name__})") from None
            with response:
                if response.status_code in REDIRECT_CODES and response.headers.get("Location"):
                    try:
                        target = check_redirect(current, response.headers["Location"])
                    except UnsafeURL as exc:
                        raise FetchError(f"the API's redirect was refused: {exc}",
                                         status=response.status_code) from None
                    if target.origin != origin:
                        raise FetchError("the API redirected to another host; redirects are only followed "
                                         "on the same host", status=response.status_code)
                    current, params = target, None  # the query is already part of the Location
                    if response.status_code == 303 or (response.status_code in (301, 302) and method != "HEAD"):
                        method, json_body, data = "GET", None, None
                    continue
                try:
                    body = _read_capped(response, max_bytes, deadline)
                except requests.RequestException as exc:
                    if isinstance(exc, (requests.Timeout, requests.exceptions.ConnectionError)) \
                            and time.monotonic() > deadline:
                        raise FetchError("the API did not answer in time") from None
                    raise FetchError(f"reading the API's answer failed ({exc.__class__.__name__})") from None
                return Fetched(status=response.status_code,
                               content_type=response.headers.get("Content-Type", ""),
                               body=body, encoding=response.encoding)
        raise FetchError(f"the API redirected more than {max_redirects} times")
    finally:
        session.close()
