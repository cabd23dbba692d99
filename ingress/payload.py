"""Reading a webhook body into plain JSON values that PostgreSQL, Redis and kombu can all take.

Guarantees (each answered with a 400 naming where the problem is, never a 500):
- the body is UTF-8 JSON (RFC 8259), without NaN or Infinity (jsonb refuses them, and Python's json would
  otherwise read `NaN`, `Infinity` and `1e999` as floats);
- containers nest at most MAX_DEPTH levels: the parser's RecursionError (around depth 1,000) is caught, and the
  walk below finds anything deeper than MAX_DEPTH without recursing itself;
- no string anywhere, key or value, holds NUL (PostgreSQL text and jsonb refuse it) or a lone surrogate (not
  Unicode: UTF-8 encoding fails in kombu and psycopg).
"""
from __future__ import annotations

import json
from typing import Any

from kombu.exceptions import EncodeError
from kombu.serialization import dumps as kombu_dumps
from marshmallow import Schema

# Infobip's deepest documented payload (a shared contact's phones) nests 8 levels; flow replies carry a form's
# answers. 32 leaves room for both and is far below the ~1,000 where Python's parser gives up.
MAX_DEPTH = 32

Path = tuple[str | int, ...]


class PayloadError(ValueError):
    """A body we refuse: `error` and `message` for the answer, `path` (keys and list indexes) of the culprit."""

    def __init__(self, error: str, reason: str, path: Path = ()):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p[:100]}" for p in path).lstrip(".")
        self.error, self.reason, self.path = error, reason, path
        self.message = f"{where}: {reason}" if path else reason  # e.g. "results[0].message.text: the value ..."
        super().__init__(self.message)

    def details(self) -> dict:
        """The culprit as a nested dict, in the shape marshmallow gives its errors: {"results": {0: {...}}}."""
        if not self.path:
            return {"_schema": [self.reason]}
        node: Any = [self.reason]
        for part in reversed(self.path):
            node = {part[:100] if isinstance(part, str) else part: node}
        return node


def _no_constants(name: str) -> Any:
    raise PayloadError("invalid_json", f"{name} is not a JSON number: PostgreSQL cannot store it")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise PayloadError("invalid_json", f"the number {text[:40]} is too large to store")
    return value


def parse_body(raw: bytes) -> Any:
    """The body as JSON values that every later step can store; PayloadError otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("invalid_json", f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        body = json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
    except RecursionError:
        raise PayloadError("invalid_json", f"the body nests deeper than {MAX_DEPTH} levels") from None
    except PayloadError:
        raise
    except ValueError as exc:  # JSONDecodeError, and ints past Python's 4,300-digit limit
        raise PayloadError("invalid_json", f"the body is not valid JSON ({str(exc)[:80]})") from None
    check_values(body)
    return body


def refusal(body: Any, envelope: Schema, max_results: int, serializer: str = "json") -> dict | None:
    """The envelope errors (marshmallow's nested dict, naming each field) or None when the body is accepted.

    Last, the body goes through the task serializer once: after parse_body that cannot fail, but if it ever did
    the answer must be this 400 rather than a 500 at enqueue.
    """
    if not isinstance(body, dict):
        return {"_schema": ["the body must be a JSON object with a 'results' list"]}
    results = body.get("results")
    if isinstance(results, list) and len(results) > max_results:  # before marshmallow lists an error per item
        return {"results": [f"Longer than maximum length {max_results}."]}
    errors = envelope.validate(body)
    if errors:
        return errors
    try:
        kombu_dumps(body, serializer=serializer)
    except EncodeError as exc:
        return {"_schema": [f"the body cannot be queued ({exc.__class__.__name__})"]}
    return None


def check_values(value: Any) -> None:
    """Walk every container iteratively (no recursion, so no depth can crash it); PayloadError at the first
    string that cannot be stored or the first container nested past MAX_DEPTH. Only containers are stacked, so a
    body of millions of numbers costs one pass over them."""
    if isinstance(value, str):
        _check_string(value, (), "value")
    if not isinstance(value, (dict, list)):
        return
    stack: list[tuple[dict | list, Path]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if len(path) >= MAX_DEPTH:
            raise PayloadError("invalid_payload", f"nested deeper than {MAX_DEPTH} levels", path)
        if isinstance(node, dict):
            for key in node:
                _check_string(key, path + (_printable(key),), "key")
            items: Any = node.items()
        else:
            items = enumerate(node)
        for key, item in items:
            if isinstance(item, str):
                _check_string(item, path + (key,), "value")
            elif isinstance(item, (dict, list)):
                stack.append((item, path + (key,)))


def _check_string(text: str, path: Path, what: str) -> None:
    if text.isascii() and "\x00" not in text:  # the common case, one C pass
        return
    if "\x00" in text:
        raise PayloadError("invalid_payload", f"the {what} contains a NUL character (\\u0000), which cannot be "
                                              "stored", path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError("invalid_payload", f"the {what} contains a lone surrogate "
                                              f"(\\u{ord(text[exc.start]):04x}), which is not valid Unicode",
                           path) from None


def _printable(key: str) -> str:
    """A key as it can be shown in the error (NUL and surrogates escaped), so the answer itself is valid."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in key)
