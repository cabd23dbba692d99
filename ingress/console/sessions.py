"""Console sessions, kept in Redis: the cookie holds only a random id (256 bits); Redis holds who signed in, for
which tenant, and the session's CSRF token. Sessions end after `IDLE_SECONDS` without a request, after
`MAX_SECONDS` in any case, at sign-out, and when the operator is revoked (checked per request)."""
from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

import redis

IDLE_SECONDS = 30 * 60
MAX_SECONDS = 12 * 3600
_PREFIX = "wabot:console:session:"


@dataclass(frozen=True)
class ConsoleSession:
    sid: str
    tenant_id: str
    operator_id: int
    operator: str
    csrf: str
    started: float


def _key(sid: str) -> str:
    # The id is stored hashed: a Redis dump does not hand out live sessions.
    return _PREFIX + hashlib.sha256(sid.encode()).hexdigest()


def start(r: redis.Redis, tenant_id: str, operator_id: int, operator: str, now: float | None = None
          ) -> ConsoleSession:
    session = ConsoleSession(secrets.token_urlsafe(32), tenant_id, operator_id, operator,
                             secrets.token_urlsafe(32), now if now is not None else time.time())
    r.set(_key(session.sid), json.dumps({"tenant_id": tenant_id, "operator_id": operator_id, "operator": operator,
                                         "csrf": session.csrf, "started": session.started}), ex=IDLE_SECONDS)
    return session


def load(r: redis.Redis, sid: str | None, now: float | None = None) -> ConsoleSession | None:
    """The live session of `sid` (its idle time restarted), or None (unknown, expired, too old)."""
    if not sid or len(sid) > 100:
        return None
    raw = r.get(_key(sid))
    if raw is None:
        return None
    data = json.loads(raw)
    if (now if now is not None else time.time()) - data["started"] > MAX_SECONDS:
        r.delete(_key(sid))
        return None
    r.expire(_key(sid), IDLE_SECONDS)
    return ConsoleSession(sid, data["tenant_id"], int(data["operator_id"]), data["operator"], data["csrf"],
                          float(data["started"]))


def end(r: redis.Redis, sid: str | None) -> None:
    if sid:
        r.delete(_key(sid))
