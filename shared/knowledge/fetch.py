"""A knowledge document fetched from a URL, through the same outbound guard as the tenants' HTTP tools.

`fetch_document` goes through shared.tools.netguard.fetch: only the URL's own host is contacted (same-host redirects
only), private/loopback/reserved addresses are refused unless `allow_private` (checked on the socket actually
used, so DNS rebinding does not get round it), at most `max_bytes` are read and the whole exchange has a deadline.
The response's content type picks the parser (shared.knowledge.documents.detect_kind), the URL's path the file
name when the type says nothing. Errors are `DocumentFetchError`, naming the problem, never the URL's query.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from shared.safeurl import UnsafeURL, check_url
from shared.tools.netguard import FetchError, fetch

MAX_URL_BYTES = 8 * 1024 * 1024   # read by the worker; the response is dropped past it
URL_TIMEOUT_SECONDS = 20.0
ACCEPT = ("text/html, application/xhtml+xml, text/markdown, text/plain, application/pdf, "
          "application/vnd.openxmlformats-officedocument.wordprocessingml.document;q=0.9, */*;q=0.1")


class DocumentFetchError(Exception):
    """The URL could not be fetched as a document (refused, unreachable, too large, not 2xx)."""


@dataclass(frozen=True)
class FetchedDocument:
    url: str
    filename: str
    content_type: str
    data: bytes


def normalise_url(url: str) -> str:
    """The URL as it will be requested (and stored as the document's source); ValueError when it is unsafe."""
    try:
        return check_url(url, "the document URL").url
    except UnsafeURL as exc:
        raise ValueError(str(exc)) from None


def filename_of(url: str) -> str:
    """The last path segment of the URL ("index.html" for a folder), what the parser falls back on."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    return name or "index.html"


def fetch_document(url: str, *, allow_private: bool = False, max_bytes: int = MAX_URL_BYTES,
                   timeout: float = URL_TIMEOUT_SECONDS) -> FetchedDocument:
    """GET the URL with the outbound guard; see the module docstring."""
    url = normalise_url(url)
    try:
        got = fetch("GET", url, headers={"Accept": ACCEPT, "User-Agent": "wabot-knowledge/1"}, timeout=timeout,
                    max_bytes=max_bytes, allow_private=allow_private)
    except FetchError as exc:
        raise DocumentFetchError(_reworded(str(exc))) from None
    if not 200 <= got.status < 300:
        raise DocumentFetchError(f"the server answered HTTP {got.status}")
    return FetchedDocument(url, filename_of(url), got.content_type, got.body)


def _reworded(message: str) -> str:
    """netguard speaks of "the API" and "this tool"; here it is a document URL."""
    message = message.replace("the API's address is private or reserved; this tool is not allowed to contact it",
                              "the URL's address is private or reserved; fetching it is not allowed "
                              "(only `wabot kb add --url ... --allow-private-network` may)")
    return message.replace("the tool's URL", "the URL").replace("the API", "the server")
