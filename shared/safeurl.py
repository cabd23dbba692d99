"""URLs checked with the parser that sends them, so a secret goes only to the host we checked.

Why: `urllib.parse.urlsplit` and requests/urllib3 disagree on some URLs. `http://evil:1\\@good/x` is host `good`
to urlsplit but host `evil` (path `/%5C@good/x`) to urllib3, so a same-origin check made with urlsplit let a
request carrying our key go to `evil`. Here a URL is normalised by requests' own `PreparedRequest.prepare_url`
and parsed by urllib3's `parse_url` (what the connection pool connects to); the origin compared is that one, and
the URL to send is the normalised text that was checked.

Refused outright, because one parser or another reads them differently: a backslash, spaces and control
characters anywhere, user info (`user:pass@`) in the authority, a host that is not a plain DNS name or IP
address, schemes other than http/https, and any URL whose scheme, host or port urlsplit and urllib3 do not
agree on. Error messages name the rule, never the URL (it may carry tokens).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

DEFAULT_PORTS = {"http": 80, "https": 443}
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f]")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")


class UnsafeURL(ValueError):
    """The URL is malformed or could be read as two different hosts; the message names the rule, not the URL."""


@dataclass(frozen=True)
class Origin:
    """Where a request goes: scheme, host (lower case, IPv6 without brackets) and port (default filled in)."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class CheckedURL:
    url: str          # requests' normalised text: send exactly this
    origin: Origin
    path: str         # without query or fragment: fit for logs

    @property
    def for_logs(self) -> str:
        return f"{self.origin}{self.path}"


def check_url(url: str, what: str = "url") -> CheckedURL:
    """Parse `url` as requests will send it; UnsafeURL (naming `what` and the rule) on anything ambiguous."""
    if not isinstance(url, str) or not url:
        raise UnsafeURL(f"{what} must be a non-empty string")
    if "\\" in url:
        raise UnsafeURL(f"{what} may not contain a backslash: URL parsers disagree on where its host ends")
    if _SPACE_OR_CONTROL.search(url):
        raise UnsafeURL(f"{what} may not contain spaces or control characters")
    try:
        split = urlsplit(url)
        split_port = split.port
    except ValueError:
        raise UnsafeURL(f"{what} is not a valid URL (bad host or port)") from None
    scheme = split.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeURL(f"{what} must start with http:// or https://")
    if "@" in split.netloc:
        raise UnsafeURL(f"{what} may not carry a user name or password ('user:pass@host')")
    if not split.netloc.isascii():
        raise UnsafeURL(f"{what} must have an ASCII host (write IDN hosts in punycode)")
    try:
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
        sent = parse_url(prepared.url)
    except (requests.RequestException, LocationParseError, ValueError, UnicodeError):
        raise UnsafeURL(f"{what} is not a valid URL") from None
    if sent.auth is not None:
        raise UnsafeURL(f"{what} may not carry a user name or password ('user:pass@host')")
    host = (sent.host or "").lower()
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not bare:
        raise UnsafeURL(f"{what} has no host")
    if not _plain_host(host):
        raise UnsafeURL(f"{what} has a host that is not a plain DNS name or IP address (write IDN hosts in "
                        "punycode)")
    origin = Origin((sent.scheme or "").lower(), bare, sent.port or DEFAULT_PORTS[scheme])
    seen_by_urlsplit = Origin(scheme, (split.hostname or "").lower(), split_port or DEFAULT_PORTS[scheme])
    if origin != seen_by_urlsplit:
        raise UnsafeURL(f"{what} is ambiguous: URL parsers disagree on its scheme, host or port")
    return CheckedURL(url=prepared.url, origin=origin, path=sent.path or "/")


def check_redirect(current: CheckedURL, location: str, what: str = "redirect Location") -> CheckedURL:
    """The absolute target of a `Location` header (relative ones resolved against `current`), checked like a URL.

    The raw header is checked before it is joined: `/\\evil.example` is a path to urljoin but a host to browsers.
    """
    if not isinstance(location, str) or "\\" in location or _SPACE_OR_CONTROL.search(location.strip()):
        raise UnsafeURL(f"{what} may not contain a backslash, spaces or control characters")
    return check_url(urljoin(current.url, location.strip()), what)


def _plain_host(host: str) -> bool:
    """A DNS name of letters, digits, '-', '_' and dots, an IPv4 address, or a bracketed IPv6 address."""
    if host.startswith("["):
        try:
            return host.endswith("]") and isinstance(ipaddress.ip_address(host[1:-1]), ipaddress.IPv6Address)
        except ValueError:
            return False
    return bool(_HOSTNAME.match(host))
