"""The memory store: per-user items (memories, notes, events, tasks) and tenant-wide knowledge in `memory_chunks`.

Two modes, chosen per connection:
- "pgvector": the tenant asks for it and its database has the `embedding` column. Ranking is exact cosine
  similarity (score = 1 - cosine distance, floored at 0).
- "sql": otherwise. Full-text search on the `tsv` column: score = the fraction of the query's words found as
  word prefixes (stop words dropped); for short queries a substring (ILIKE) match counts half. ts_rank breaks ties.

Guarantees:
- Isolation: every read is filtered to the user's own rows plus tenant-wide rows (user_id IS NULL) BEFORE
  ranking (a MATERIALIZED CTE), and every write or delete matches `user_id` too: no call can reach another user's
  rows. Ranking is exact over that filtered set, so results are complete (an approximate index over all users
  would return too few rows once filtered).
- Transactions: every method runs in the caller's transaction and never commits.
- Batching: `add` embeds all its items in one embedder call.
- Embedder failures (EMBEDDER_FAILURES: an LLMError, a ConfigError such as a wrong dimension, a connection error)
  never cost a turn its memory: `search_or_fulltext` (and `relevant_for_prompt`) rank with full-text search
  instead and say why; `add_or_defer` / `update_or_defer` store the text with a NULL embedding (found by
  full-text search now, embedded later by `backfill_embeddings`) and say why. `problem()` words the reason
  without secrets.
"""
from __future__ import annotations

import logging
import re
import threading
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from shared.db.migrate import has_vector
from shared.errors import ConfigError
from shared.llm.base import LLMError
from shared.memory.embedders import Embedder, EmbeddingStore
from shared.config.tenants import Tenant

log = logging.getLogger(__name__)

KINDS = ("memory", "note", "event", "task", "knowledge")
MODES = ("pgvector", "sql")
# What `relevant_for_prompt` keeps by default. pgvector: cosine similarity of related short texts is ~0.3-0.6
# (local-hash and OpenAI models alike), unrelated ones stay below ~0.15. sql: at least half the query's words.
DEFAULT_PROMPT_MIN_SCORE = {"pgvector": 0.25, "sql": 0.5}
# What the search tool keeps: anything related at all (cosine similarity of unrelated texts sits near 0-0.15).
DEFAULT_SEARCH_MIN_SCORE = {"pgvector": 0.15, "sql": 0.0}
MAX_LIMIT = 100
SHORT_QUERY_TERMS = 3          # queries of at most this many words also match substrings (ILIKE)
MIN_SUBSTRING_LEN = 3          # shorter words would match inside too many others
MAX_TERMS = 32
_TERM = re.compile(r"[^\W_]+")
# Words that say nothing about what to find; dropped from SQL-mode queries unless nothing else is left.
STOP_WORDS = frozenset("""
a an and are as at be but by can could did do does for from had has have how i if in is it its me my no not of on
or our so that the their them then there these they this to too us was we were what when where which who why will
with would you your yours about any please tell know remember hi hello hey""".split())

_ITEM_COLUMNS = "id, user_id, kind, title, content, starts_at, metadata"
_INSERT_COLUMNS = "user_id, kind, title, content, starts_at, metadata"
# What an embedder (or building one) raises when it cannot embed: memory then works without embeddings.
EMBEDDER_FAILURES = (LLMError, ConfigError, OSError)


@dataclass(frozen=True)
class NewItem:
    """An item to store. `starts_at` must carry a time zone (events are compared across zones)."""

    kind: str
    title: str | None
    content: str
    starts_at: datetime | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.title is not None and not isinstance(self.title, str):
            raise ValueError("title must be text or None")
        if not isinstance(self.content, str):
            raise ValueError("content must be text")
        if not (self.title or "").strip() and not self.content.strip():
            raise ValueError("an item needs a title or some content")
        if self.starts_at is not None:
            if not isinstance(self.starts_at, datetime) or self.starts_at.utcoffset() is None:
                raise ValueError("starts_at must be a datetime with a time zone")
        if not isinstance(self.metadata, Mapping):
            raise ValueError("metadata must be a mapping")

    def embed_text(self) -> str:
        return embed_text(self.title, self.content)


@dataclass(frozen=True)
class MemoryHit:
    id: int
    kind: str
    title: str | None
    content: str
    starts_at: datetime | None
    metadata: dict
    score: float
    scope: str  # "user" (the user's own row) | "tenant" (tenant-wide knowledge)

    def as_json(self, tz=None) -> dict:
        """JSON-ready, with `starts_at` in ISO 8601 in `tz` (the tenant's zone) when given."""
        starts = self.starts_at.astimezone(tz) if (self.starts_at and tz) else self.starts_at
        return {"id": self.id, "kind": self.kind, "title": self.title, "content": self.content,
                "starts_at": starts.isoformat() if starts else None, "metadata": self.metadata,
                "score": round(self.score, 3), "scope": self.scope}


@dataclass(frozen=True)
class SearchOutcome:
    """What `search_or_fulltext` found, how it ranked (`mode`), and why semantic search was not used (None when
    it was, or when the tenant is in sql mode anyway)."""

    hits: list[MemoryHit]
    mode: str
    semantic_unavailable: str | None = None


def embedder_problem(tenant: Tenant, exc: BaseException) -> str:
    """Why an embedder failed, in words fit for a log line or the model: never a secret of the tenant."""
    if isinstance(exc, (LLMError, ConfigError)):
        text = str(exc) or exc.__class__.__name__
    else:  # connection errors and the like: their text may quote URLs with credentials
        text = f"embedding service unreachable ({exc.__class__.__name__})"
    t = tenant
    secrets = (t.llm.api_key, *t.llm.api_keys, t.embedding.api_key, t.infobip_api_key, t.webhook_token)
    for secret in sorted({x for x in secrets if x and len(x) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return text[:500]


def embed_text(title: str | None, content: str) -> str:
    """The text an item is embedded from: its title and content."""
    title = (title or "").strip()
    return f"{title}\n{content}" if title else content


def query_terms(query: str) -> list[str]:
    """Lower-cased words of a query, stop words dropped (unless nothing else is left), duplicates removed."""
    words = list(dict.fromkeys(w.lower() for w in _TERM.findall(query)))
    kept = [w for w in words if w not in STOP_WORDS]
    return (kept or words)[:MAX_TERMS]


@dataclass
class _DbFacts:
    has_vector: bool
    column_dim: int | None
    registered: bool = False


_facts: "weakref.WeakKeyDictionary[psycopg.Connection, _DbFacts]" = weakref.WeakKeyDictionary()
_facts_lock = threading.Lock()


def _db_facts(conn: psycopg.Connection) -> _DbFacts:
    """What this database has (cached per connection: pooled connections keep it; schemas change at start-up)."""
    with _facts_lock:
        facts = _facts.get(conn)
    if facts is not None:
        return facts
    dim = None
    vector = has_vector(conn)
    if vector:
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = 'memory_chunks'::regclass "
                              "AND attname = 'embedding'").fetchone()
            dim = row["atttypmod"] if row and row["atttypmod"] > 0 else None
    facts = _DbFacts(vector, dim)
    with _facts_lock:
        _facts[conn] = facts
    return facts


def _hit(row: Mapping[str, Any], score: float) -> MemoryHit:
    return MemoryHit(id=row["id"], kind=row["kind"], title=row["title"], content=row["content"],
                     starts_at=row["starts_at"], metadata=dict(row["metadata"] or {}), score=float(score),
                     scope="tenant" if row["user_id"] is None else "user")


def _check_user(user_id: int | None) -> None:
    if user_id is not None and (not isinstance(user_id, int) or isinstance(user_id, bool)):
        raise ValueError("user_id must be an integer id or None (tenant-wide)")


def _check_kinds(kinds: Iterable[str] | None) -> list[str]:
    if kinds is None:
        return list(KINDS)
    kinds = list(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty list of {', '.join(KINDS)}")
    return kinds


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class MemoryStore(EmbeddingStore):
    """Memory of one tenant (its embedder built on first use: shared.memory.embedders.EmbeddingStore)."""

    # ---- mode
    def mode(self, conn: psycopg.Connection) -> str:
        """"pgvector" when the tenant wants it and the database has the column (types registered), else "sql"."""
        facts = _db_facts(conn)
        if self.tenant.vector_store != "pgvector" or not facts.has_vector:
            return "sql"
        if facts.column_dim is not None and facts.column_dim != self.embedder.dim:
            raise ConfigError(f"tenant {self.tenant.tenant_id}: the database stores {facts.column_dim}-dimension "
                              f"embeddings but embedding model {self.tenant.embedding_model!r} has "
                              f"{self.embedder.dim}")
        if not facts.registered:
            from pgvector.psycopg import register_vector  # only where the extension exists

            register_vector(conn)
            facts.registered = True
        return "pgvector"

    def _vector(self, text_or_vec: str | Sequence[float]):
        from pgvector import Vector

        vec = self.embedder.embed([text_or_vec])[0] if isinstance(text_or_vec, str) else text_or_vec
        return Vector(list(vec))

    # ---- writes
    def add(self, conn: psycopg.Connection, user_id: int | None, items: Sequence[NewItem]) -> list[int]:
        """Insert items for a user (None: tenant-wide knowledge); returns their ids in order.

        pgvector mode embeds all items in one embedder call; an embedder failure raises before anything is written.
        """
        return self._add(conn, user_id, items, defer=False)[0]

    def add_or_defer(self, conn: psycopg.Connection, user_id: int | None,
                     items: Sequence[NewItem]) -> tuple[list[int], str | None]:
        """`add` that survives an embedder failure: the items are stored with a NULL embedding (full-text search
        finds them now, `backfill_embeddings` embeds them later). Returns the ids and why they were not embedded
        (None when they were, or when the tenant is in sql mode)."""
        return self._add(conn, user_id, items, defer=True)

    def _add(self, conn, user_id, items, defer: bool) -> tuple[list[int], str | None]:
        _check_user(user_id)
        items = list(items)
        if not all(isinstance(i, NewItem) for i in items):
            raise ValueError("items must be NewItem objects")
        if not items:
            return [], None
        semantic, why = self._semantic(conn, defer)
        vectors = self._embed([i.embed_text() for i in items], defer) if semantic else None
        if isinstance(vectors, str):
            why, vectors = vectors, None
        ids: list[int] = []
        with conn.cursor(row_factory=dict_row) as cur:
            for k, item in enumerate(items):
                params = [user_id, item.kind, item.title, item.content, item.starts_at, Jsonb(dict(item.metadata))]
                columns = _INSERT_COLUMNS
                if vectors is not None:
                    columns += ", embedding"
                    params.append(self._vector(vectors[k]))
                row = cur.execute(f"INSERT INTO memory_chunks ({columns}) VALUES ({', '.join(['%s'] * len(params))}) "
                                  "RETURNING id", params).fetchone()
                ids.append(row["id"])
        return ids, why

    def _semantic(self, conn: psycopg.Connection, defer: bool = True) -> tuple[bool, str | None]:
        """Whether embeddings are used here: (True, None) in pgvector mode, (False, None) in sql mode. When the
        tenant's embedder cannot be built or does not fit the column: raises, or with `defer` (False, why)."""
        try:
            return self.mode(conn) == "pgvector", None
        except EMBEDDER_FAILURES as exc:
            if not defer:
                raise
            return False, self._failed(exc)

    def _embed(self, texts: list[str], defer: bool) -> list[list[float]] | str:
        """One embedder call for `texts`; with `defer`, a failure returns why (a str) instead of raising."""
        try:
            vectors = self.embedder.embed(texts)
            if len(vectors) != len(texts):
                raise LLMError(f"embedder {self.embedder.name} returned {len(vectors)} vectors for {len(texts)} "
                               f"texts", retryable=False)
            return vectors
        except EMBEDDER_FAILURES as exc:
            if not defer:
                raise
            return self._failed(exc)

    def problem(self, exc: BaseException) -> str:
        """Why the embedder failed, in words fit for a log line or the model: never a secret of the tenant."""
        return embedder_problem(self.tenant, exc)

    def _failed(self, exc: BaseException) -> str:
        why = self.problem(exc)
        log.warning("embedder failed; memory works without embeddings for this call",
                    extra={"tenant_id": self.tenant.tenant_id, "error": why})
        return why

    def update(self, conn: psycopg.Connection, user_id: int | None, item_id: int, **fields: Any) -> bool:
        """Change fields (kind, title, content, starts_at, metadata) of one of the user's own items.

        Returns False (and changes nothing) when the item does not exist or belongs to someone else. A new title or
        content is re-embedded (pgvector mode) or has its stale embedding cleared (sql mode).
        """
        return self._update(conn, user_id, item_id, fields, defer=False)[0]

    def update_or_defer(self, conn: psycopg.Connection, user_id: int | None, item_id: int,
                        **fields: Any) -> tuple[bool, str | None]:
        """`update` that survives an embedder failure: a changed text gets a NULL embedding (embedded later by
        `backfill_embeddings`). Returns whether the item was updated and why it was not re-embedded (or None)."""
        return self._update(conn, user_id, item_id, fields, defer=True)

    def _update(self, conn, user_id, item_id, fields: dict, defer: bool) -> tuple[bool, str | None]:
        _check_user(user_id)
        allowed = {"kind", "title", "content", "starts_at", "metadata"}
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise ValueError(f"cannot update field(s) {', '.join(unknown)}")
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(f"SELECT {_ITEM_COLUMNS} FROM memory_chunks "
                              "WHERE id = %s AND user_id IS NOT DISTINCT FROM %s FOR UPDATE",
                              (item_id, user_id)).fetchone()
            if row is None:
                return False, None
            merged = NewItem(**{k: fields.get(k, row[k]) for k in ("kind", "title", "content", "starts_at",
                                                                    "metadata")})
            sets = ["kind = %s", "title = %s", "content = %s", "starts_at = %s", "metadata = %s",
                    "updated_at = now()"]
            params: list[Any] = [merged.kind, merged.title, merged.content, merged.starts_at,
                                 Jsonb(dict(merged.metadata))]
            why = None
            if embed_text(merged.title, merged.content) != embed_text(row["title"], row["content"]):
                semantic, why = self._semantic(conn, defer)
                vectors = self._embed([merged.embed_text()], defer) if semantic else None
                if isinstance(vectors, str):
                    why, vectors = vectors, None
                if vectors is not None:
                    sets.append("embedding = %s")
                    params.append(self._vector(vectors[0]))
                elif _db_facts(conn).has_vector:
                    sets.append("embedding = NULL")  # stale or not embedded: backfill_embeddings fills it later
            cur.execute(f"UPDATE memory_chunks SET {', '.join(sets)} WHERE id = %s", params + [item_id])
        return True, why

    def delete(self, conn: psycopg.Connection, user_id: int | None, item_id: int) -> bool:
        """Delete one of the user's own items; False when there is no such item of this user."""
        _check_user(user_id)
        cur = conn.execute("DELETE FROM memory_chunks WHERE id = %s AND user_id IS NOT DISTINCT FROM %s",
                           (item_id, user_id))
        return cur.rowcount == 1

    def backfill_embeddings(self, conn: psycopg.Connection, batch: int = 100) -> int:
        """Embed up to `batch` rows that have no embedding (written in sql mode, or while the embedder was down);
        returns how many were embedded."""
        if self.mode(conn) != "pgvector":
            return 0
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute("SELECT id, title, content FROM memory_chunks WHERE embedding IS NULL "
                               "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED", (batch,)).fetchall()
            if not rows:
                return 0
            vectors = self.embedder.embed([embed_text(r["title"], r["content"]) for r in rows])
            for r, vec in zip(rows, vectors):
                cur.execute("UPDATE memory_chunks SET embedding = %s WHERE id = %s", (self._vector(vec), r["id"]))
        return len(rows)

    # ---- reads
    def get(self, conn: psycopg.Connection, user_id: int | None, item_id: int) -> MemoryHit | None:
        """One of the user's own items (not tenant-wide ones: those are read-only for users)."""
        _check_user(user_id)
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(f"SELECT {_ITEM_COLUMNS} FROM memory_chunks "
                              "WHERE id = %s AND user_id IS NOT DISTINCT FROM %s", (item_id, user_id)).fetchone()
        return _hit(row, 1.0) if row else None

    def search(self, conn: psycopg.Connection, user_id: int | None, query: str, limit: int = 5,
               kinds: Iterable[str] | None = None, min_score: float | None = None,
               mode: str | None = None) -> list[MemoryHit]:
        """The user's rows and tenant-wide rows best matching `query`, best first (score 0..1).

        Raises ValueError for a query without any letter or digit. `mode` forces "sql" (used when the embedder
        is down); it cannot force "pgvector" on a database without it.
        """
        _check_user(user_id)
        if not isinstance(query, str) or not _TERM.search(query):
            raise ValueError("query must contain at least one word")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        if min_score is not None and not 0 <= min_score <= 1:
            raise ValueError("min_score must be between 0 and 1")
        if mode not in (None, *MODES):
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        kinds = _check_kinds(kinds)
        if mode == "sql" or self.mode(conn) == "sql":  # forced sql never touches the embedder
            return self._search_sql(conn, user_id, query, limit, kinds, min_score)
        return self._search_vector(conn, user_id, query, limit, kinds, min_score)

    def search_or_fulltext(self, conn: psycopg.Connection, user_id: int | None, query: str, limit: int = 5,
                           kinds: Iterable[str] | None = None, min_scores: Mapping[str, float] | None = None,
                           ) -> SearchOutcome:
        """`search` that never fails for the embedder: on any embedder failure (EMBEDDER_FAILURES) it ranks with
        full-text search and says why in `semantic_unavailable`. `min_scores` per mode (default: the search
        tool's floors). The semantic attempt runs in a savepoint, so a failure leaves the transaction usable.
        Invalid arguments still raise ValueError."""
        floors = DEFAULT_SEARCH_MIN_SCORE if min_scores is None else min_scores
        semantic, why = self._semantic(conn)
        if semantic:
            try:
                with conn.transaction():
                    hits = self.search(conn, user_id, query, limit=limit, kinds=kinds, min_score=floors["pgvector"])
                return SearchOutcome(hits, "pgvector")
            except EMBEDDER_FAILURES as exc:
                why = self._failed(exc)
        with conn.transaction():
            hits = self.search(conn, user_id, query, limit=limit, kinds=kinds, min_score=floors["sql"], mode="sql")
        return SearchOutcome(hits, "sql", why)

    def _search_vector(self, conn, user_id, query, limit, kinds, min_score) -> list[MemoryHit]:
        q = self._vector(query)
        with conn.cursor(row_factory=dict_row) as cur:
            # MATERIALIZED: the filter runs first (index on user_id), then exact ranking over the user's rows;
            # the planner cannot push the ORDER BY into the HNSW index, which would drop rows after filtering.
            rows = cur.execute(f"""
                WITH mine AS MATERIALIZED (
                    SELECT {_ITEM_COLUMNS}, embedding FROM memory_chunks
                    WHERE (user_id = %(uid)s OR user_id IS NULL) AND kind = ANY(%(kinds)s)
                      AND embedding IS NOT NULL
                ), ranked AS (
                    SELECT {_ITEM_COLUMNS}, GREATEST(0, 1 - (embedding <=> %(q)s))::float8 AS score FROM mine
                )
                SELECT * FROM ranked WHERE score >= %(min)s
                ORDER BY score DESC, id DESC LIMIT %(limit)s
            """, {"uid": user_id, "kinds": kinds, "q": q, "min": min_score or 0.0, "limit": limit}).fetchall()
        return [_hit(r, r["score"]) for r in rows]

    def _search_sql(self, conn, user_id, query, limit, kinds, min_score) -> list[MemoryHit]:
        terms = query_terms(query)
        short = len(terms) <= SHORT_QUERY_TERMS
        tsqueries = [f"'{t}':*" for t in terms]  # terms are letters/digits only: safe inside quotes
        patterns = [f"%{_escape_like(t)}%" if short and len(t) >= MIN_SUBSTRING_LEN else None for t in terms]
        with conn.cursor(row_factory=dict_row) as cur:
            # Full-text matching is exact (no approximate index here), so the planner may combine the user index
            # and the GIN index freely; only candidate rows (any word matches) get the per-word score.
            rows = cur.execute(f"""
                WITH terms AS (
                    SELECT to_tsquery('simple', t.q) AS tq, t.pat
                    FROM unnest(%(tqs)s::text[], %(pats)s::text[]) AS t(q, pat)
                ), candidates AS (
                    SELECT {_ITEM_COLUMNS}, tsv, coalesce(title, '') || ' ' || content AS body FROM memory_chunks
                    WHERE (user_id = %(uid)s OR user_id IS NULL) AND kind = ANY(%(kinds)s)
                      AND (tsv @@ to_tsquery('simple', %(anyq)s)
                           OR coalesce(title, '') || ' ' || content ILIKE ANY(%(likes)s::text[]))
                ), scored AS (
                    SELECT c.*, (SELECT sum(CASE WHEN c.tsv @@ terms.tq THEN 1.0
                                                 WHEN terms.pat IS NOT NULL AND c.body ILIKE terms.pat THEN 0.5
                                                 ELSE 0.0 END) FROM terms)::float8 / %(n)s AS score
                    FROM candidates c
                )
                SELECT {_ITEM_COLUMNS}, score, ts_rank(tsv, to_tsquery('simple', %(anyq)s)) AS rank FROM scored
                WHERE score >= %(min)s
                ORDER BY score DESC, rank DESC, id DESC LIMIT %(limit)s
            """, {"uid": user_id, "kinds": kinds, "tqs": tsqueries, "pats": patterns, "n": len(terms),
                  "likes": [p for p in patterns if p], "anyq": " | ".join(tsqueries), "min": min_score or 0.0,
                  "limit": limit}).fetchall()
        return [_hit(r, r["score"]) for r in rows]

    def list_events(self, conn: psycopg.Connection, user_id: int | None, start: datetime, end: datetime,
                    limit: int = MAX_LIMIT) -> list[MemoryHit]:
        """The user's (and tenant-wide) events with start <= starts_at < end, earliest first."""
        _check_user(user_id)
        for name, value in (("start", start), ("end", end)):
            if not isinstance(value, datetime) or value.utcoffset() is None:
                raise ValueError(f"{name} must be a datetime with a time zone")
        if not start < end:
            raise ValueError("start must be before end")
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(f"""
                SELECT {_ITEM_COLUMNS} FROM memory_chunks
                WHERE (user_id = %s OR user_id IS NULL) AND kind = 'event' AND starts_at >= %s AND starts_at < %s
                ORDER BY starts_at, id LIMIT %s
            """, (user_id, start, end, limit)).fetchall()
        return [_hit(r, 1.0) for r in rows]

    def relevant_for_prompt(self, conn: psycopg.Connection, user_id: int | None, query: str | None, limit: int = 3,
                            min_score: float | None = None) -> list[MemoryHit]:
        """What the engine adds to a turn's context when rag_enabled: a few items above the mode's floor.

        A text without words gives nothing. On any embedder failure (unreachable, a wrong dimension, an unusable
        answer) this turn falls back to full-text ranking (logged as a warning) rather than failing the user's
        message. The semantic read runs in a savepoint, so a failing query leaves the caller's transaction usable.
        """
        if not query or not _TERM.search(query):
            return []
        floors = DEFAULT_PROMPT_MIN_SCORE if min_score is None else {m: min_score for m in MODES}
        return self.search_or_fulltext(conn, user_id, query[:2000], limit=limit, min_scores=floors).hits
