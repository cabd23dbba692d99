"""The knowledge store of one tenant (issue 13): documents in, passages out.

- `ingest` parses and chunks a document (shared.knowledge) and stores it under its `source` (a file path, a URL
  or a name). An unchanged document (same content hash) writes nothing ("unchanged"; new tags alone are
  "retagged"). A changed one has all its new chunks embedded first, in batches, and only then its old chunks
  replaced, so an embedder failure raises before anything is written and the old version stays. A document that
  cannot be read is recorded as `failed` when new; a known one keeps its last good version.
- `search` is hybrid: cosine similarity (pgvector) and full-text (ts_rank on `tsv`, the question's words as whole
  words with their inflections: shared.knowledge.terms), each its top candidates, merged by reciprocal rank fusion
  (score = sum of 1 / (60 + rank)). In sql mode (the tenant's `vector_store: sql_fallback`, or no pgvector in the
  database) and when the embedder fails, full-text alone ranks, and the outcome says why.
- The embedding model: `knowledge_chunks.embedding` holds the vectors of one model, recorded in the tenant
  database (migration 0013; no record: the configured model, recorded by the first semantic ingest). Ingests and
  query embeddings use the recorded model, so while a reindex to the tenant's new model runs in the background
  (shared/knowledge/reindex.py), searches keep working on the old vectors; the reindex switches vectors and record
  in one transaction. `embedding_status` says whether a reindex is needed.
- Every method runs in the caller's transaction and never commits. All SQL is in shared.db.knowledge and
  shared.db.knowledge_jobs.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import psycopg

from shared.db import knowledge as repo
from shared.db import knowledge_jobs as jobs_repo
from shared.errors import ConfigError
from shared.knowledge.chunking import Chunk, chunk
from shared.knowledge.documents import KINDS_BY_EXTENSION, DocumentError, parse
from shared.knowledge.terms import fulltext_terms
from shared.llm.base import LLMError
from shared.memory.embedders import Embedder, EmbeddingStore, embedder_for
from shared.memory.store import EMBEDDER_FAILURES, embedder_problem, query_terms
from shared.config.tenants import Tenant

log = logging.getLogger(__name__)

RRF_K = 60
EMBED_BATCH = 64          # chunks per embedder call
CANDIDATES = 4            # each method's top-k is this many times the limit (at least MIN_CANDIDATES)
MIN_CANDIDATES = 20
MAX_LIMIT = 50
MAX_QUERY_CHARS = 2000
# Vector candidates must at least not point away from the query. No higher floor: a short question and a long
# chunk that answers it can have a low cosine (a few shared words among hundreds), and fusion ranks them anyway;
# whether a hit is relevant enough for a prompt is the caller's cut, not the ranking's.
MIN_SIMILARITY = 0.0
# A word found in more chunks than this is left out of full text's any-word pool (it still ranks, and counts in the
# every-word pool): its posting list costs milliseconds to read and its matches are mostly noise at that count.
COMMON_WORD_CHUNKS = 1000
WORD_STATISTICS_TTL = 300.0  # seconds a store keeps the planner's word statistics of its database
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class IngestResult:
    source: str
    status: str  # "added" | "updated" | "unchanged" | "retagged" | "failed" | "skipped"
    document_id: int | None = None
    chunks: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class KnowledgeHit:
    chunk_id: int
    document_id: int
    source: str
    title: str
    heading_path: list[str]
    page_start: int | None
    page_end: int | None
    text: str
    score: float                # RRF: orders hits, says nothing about whether they answer anything
    matched: tuple[str, ...]    # which rankings found it: "vector", "fulltext"
    similarity: float | None = None  # cosine similarity to the query (None: the vector ranking did not find it)
    coverage: float = 0.0       # share of the query's words (stop words aside) in the chunk, its headings, title

    def as_json(self) -> dict:
        return {"chunk_id": self.chunk_id, "source": self.source, "title": self.title,
                "heading_path": self.heading_path, "page_start": self.page_start, "page_end": self.page_end,
                "text": self.text, "score": round(self.score, 5), "matched": list(self.matched),
                "similarity": None if self.similarity is None else round(self.similarity, 4),
                "coverage": round(self.coverage, 3)}

    def relevant(self, min_similarity: float, min_coverage: float) -> bool:
        """Whether the hit is close enough to the question to ground an answer: either measure suffices."""
        return (self.similarity is not None and self.similarity >= min_similarity) or self.coverage >= min_coverage

    def citation(self) -> str:
        """Where the passage comes from, as a person would cite it: title › section (p. 17)."""
        where = " › ".join([self.title or Path(self.source).name, *self.heading_path[-2:]])
        if self.page_start is not None:
            pages = self.page_start if self.page_end in (None, self.page_start) else \
                f"{self.page_start}-{self.page_end}"
            where += f" (p. {pages})"
        return where


@dataclass(frozen=True)
class KnowledgeSearch:
    hits: list[KnowledgeHit]
    mode: str  # "hybrid" | "fulltext"
    note: str | None = None  # why vector search was not used, when the tenant wanted it

    def relevant(self, min_similarity: float, min_coverage: float) -> list[KnowledgeHit]:
        return [h for h in self.hits if h.relevant(min_similarity, min_coverage)]


def coverage(query: str, text: str) -> float:
    """The share of the query's words (shared.memory.store.query_terms) found as word prefixes in `text`, as the
    full-text ranking matches them ('open' finds 'opening')."""
    terms = query_terms(query)
    if not terms:
        return 0.0
    words = {w.lower() for w in _WORD.findall(text)}
    found = sum(1 for t in terms if t in words or any(w.startswith(t) for w in words))
    return found / len(terms)


@dataclass
class Prepared:
    """A parsed and chunked document, not yet stored: what an ingest embeds and then writes."""

    title: str
    kind: str
    content_hash: str
    chunks: list[Chunk] = field(default_factory=list)


def fuse(rankings: dict[str, list[int]], k: int = RRF_K) -> list[tuple[int, float, tuple[str, ...]]]:
    """Reciprocal rank fusion: (id, score, which rankings found it), best first (ties: smaller id first)."""
    scores: dict[int, float] = {}
    found: dict[int, list[str]] = {}
    for name, ids in rankings.items():
        for rank, item in enumerate(ids, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
            found.setdefault(item, []).append(name)
    order = sorted(scores, key=lambda i: (-scores[i], i))
    return [(i, scores[i], tuple(found[i])) for i in order]


def embed_texts(embedder: Embedder, texts: list[str]) -> list[list[float]]:
    """One embedder call; an answer with another number of vectors is an LLMError."""
    got = embedder.embed(texts)
    if len(got) != len(texts):
        raise LLMError(f"embedder {embedder.name} returned {len(got)} vectors for {len(texts)} texts",
                       retryable=False)
    return got


def _clean_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        raise ValueError("tags must be a list of words, not one string")
    cleaned = [t.strip().lower() for t in tags if isinstance(t, str) and t.strip()]
    return sorted(set(cleaned))


@dataclass(frozen=True)
class EmbeddingStatus:
    """Which model the stored vectors come from, which one the tenant is configured with, and whether they
    differ (then `wabot kb reindex` moves the vectors to the configured model)."""

    stored_model: str | None   # None: nothing recorded yet (the configured model is assumed)
    stored_dim: int | None
    configured_model: str
    configured_dim: int

    @property
    def reindex_needed(self) -> bool:
        return self.stored_model is not None and (self.stored_model, self.stored_dim) != (
            self.configured_model, self.configured_dim)

    def as_json(self) -> dict:
        return {"stored_model": self.stored_model, "stored_dim": self.stored_dim,
                "configured_model": self.configured_model, "configured_dim": self.configured_dim,
                "reindex_needed": self.reindex_needed}


class KnowledgeStore(EmbeddingStore):
    """Knowledge of one tenant (its embedder built on first use: shared.memory.embedders.EmbeddingStore).
    `embedder` embeds with the tenant's configured model; `model_embedder(model, dim)` builds the embedder of
    another (recorded) model, default `embedder_for` the tenant with that model."""

    def __init__(self, tenant: Tenant, embedder: Embedder | None = None,
                 model_embedder: Callable[[str, int], Embedder] | None = None,
                 common_word_chunks: int = COMMON_WORD_CHUNKS):
        super().__init__(tenant, embedder)
        self.common_word_chunks = common_word_chunks
        self._model_embedder = model_embedder or self._default_model_embedder
        self._by_model: dict[tuple[str, int], Embedder] = {}
        self._word_statistics: tuple[float, float, dict[str, float]] | None = None  # (read at, chunks, shares)

    def _default_model_embedder(self, model: str, dim: int) -> Embedder:
        return embedder_for(dataclasses.replace(self.tenant, embedding_model=model, embedding_dim=dim))

    def stored_model(self, conn: psycopg.Connection) -> tuple[str, int]:
        """(model, dim) of the stored vectors: the recorded one, else the configured one."""
        return jobs_repo.embedding_model(conn) or (self.tenant.embedding_model, self.tenant.embedding_dim)

    def embedding_status(self, conn: psycopg.Connection) -> EmbeddingStatus:
        recorded = jobs_repo.embedding_model(conn)
        return EmbeddingStatus(recorded[0] if recorded else None, recorded[1] if recorded else None,
                               self.tenant.embedding_model, self.tenant.embedding_dim)

    def active_embedder(self, conn: psycopg.Connection) -> Embedder:
        """The embedder of the stored vectors' model (queries and ingests must match the column's vectors)."""
        return self.embedder_of(*self.stored_model(conn))

    def embedder_of(self, model: str, dim: int) -> Embedder:
        """The configured embedder for the configured model, else one built for `model` (kept)."""
        if (model, dim) == (self.tenant.embedding_model, self.tenant.embedding_dim):
            return self.embedder
        if (model, dim) not in self._by_model:
            self._by_model[(model, dim)] = self._model_embedder(model, dim)
        return self._by_model[(model, dim)]

    def mode(self, conn: psycopg.Connection) -> str:
        """"pgvector" when the tenant wants it and the database has `knowledge_chunks.embedding`, else "sql".
        Raises ConfigError when the stored model's embedder does not fit the column."""
        dim = repo.embedding_dim(conn)
        if self.tenant.vector_store != "pgvector" or dim is None:
            return "sql"
        embedder = self.active_embedder(conn)
        if dim > 0 and dim != embedder.dim:
            raise ConfigError(f"tenant {self.tenant.tenant_id}: the database stores {dim}-dimension embeddings but "
                              f"embedding model {embedder.name!r} has {embedder.dim}")
        return "pgvector"

    # ---- writes
    def ingest(self, conn: psycopg.Connection, source: str, data: bytes, filename: str,
               tags: Iterable[str] | None = None, content_type: str | None = None) -> IngestResult:
        """Store (or refresh) the document of `source`: see the module docstring. `tags` replace the document's
        tags; None keeps them. Embedder failures raise (EMBEDDER_FAILURES) before anything is written."""
        existing, tags = self.existing(conn, source, tags)
        try:
            prepared = self.prepare(data, filename, content_type)
        except DocumentError as exc:
            return self.record_failure(conn, source, existing, filename, tags, exc)
        unchanged = self.unchanged(conn, source, existing, prepared, tags)
        if unchanged is not None:
            return unchanged
        semantic = self.mode(conn) == "pgvector"
        vectors = self.embed_chunks(prepared.chunks, self.active_embedder(conn)) if semantic else None
        return self.store_prepared(conn, source, existing, prepared, tags, vectors)

    @staticmethod
    def existing(conn: psycopg.Connection, source: str, tags: Iterable[str] | None
                 ) -> tuple[dict | None, list[str]]:
        """The document row of `source` (locked until the transaction ends) and the tags an ingest gives it."""
        if not isinstance(source, str) or not source.strip():
            raise ValueError("source must be a non-empty text (a file path, a URL or a name)")
        jobs_repo.lock_chunks_for_write(conn)  # before the recorded model is read: no reindex swap in between
        existing = repo.document_by_source(conn, source, lock=True)
        return existing, _clean_tags(tags) if tags is not None else sorted(existing["tags"]) if existing else []

    @staticmethod
    def unchanged(conn: psycopg.Connection, source: str, existing: dict | None, prepared: Prepared,
                  tags: list[str]) -> IngestResult | None:
        """"unchanged" (nothing written) or "retagged" when the stored version has this content; else None."""
        if existing and existing["status"] == "ready" and existing["content_hash"] == prepared.content_hash:
            if sorted(existing["tags"]) == tags:
                return IngestResult(source, "unchanged", existing["id"], existing["chunk_count"])
            repo.set_tags(conn, existing["id"], tags)
            return IngestResult(source, "retagged", existing["id"], existing["chunk_count"])
        return None

    def store_prepared(self, conn: psycopg.Connection, source: str, existing: dict | None, prepared: Prepared,
                       tags: list[str], vectors: list[list[float]] | None) -> IngestResult:
        """Write the document and replace its chunks at once (vectors of the stored model, or None in sql mode);
        the first semantic write records the model."""
        doc_id = repo.save_document(conn, source=source, title=prepared.title, kind=prepared.kind,
                                    content_hash=prepared.content_hash, tags=tags, status="ready", error=None,
                                    chunk_count=len(prepared.chunks))
        rows = [{"ordinal": c.ordinal, "heading_path": c.heading_path, "page_start": c.page_start,
                 "page_end": c.page_end, "text": c.text, "content_hash": c.content_hash,
                 "embedding": repo.vector_literal(vectors[i]) if vectors else None}
                for i, c in enumerate(prepared.chunks)]
        repo.replace_chunks(conn, doc_id, rows, with_embedding=repo.embedding_dim(conn) is not None)
        if vectors:
            model, dim = self.stored_model(conn)
            jobs_repo.record_embedding_model(conn, model, dim, replace=False)
        return IngestResult(source, "updated" if existing else "added", doc_id, len(rows))

    @staticmethod
    def prepare(data: bytes, filename: str, content_type: str | None = None) -> Prepared:
        """Parse and chunk (pure); DocumentError when there is nothing to index."""
        document = parse(data, filename=filename, content_type=content_type)
        chunks = chunk(document)
        if not chunks:
            raise DocumentError(filename, "no text to index")
        return Prepared(document.title, document.kind, document.content_hash, chunks)

    def record_failure(self, conn, source: str, existing: dict | None, filename: str, tags: list[str],
                       exc: DocumentError) -> IngestResult:
        """A new source is recorded as failed (so `list` shows why); a known one keeps its last good version."""
        log.warning("knowledge document not ingested",
                    extra={"tenant_id": self.tenant.tenant_id, "source": source, "error": exc.reason})
        if existing is not None and existing["status"] == "ready":
            return IngestResult(source, "failed", existing["id"], existing["chunk_count"],
                                f"{exc.reason} (the previous version is kept)")
        doc_id = repo.save_document(conn, source=source, title=Path(filename).stem, kind="", content_hash=None,
                                    tags=tags, status="failed", error=exc.reason, chunk_count=0)
        repo.replace_chunks(conn, doc_id, [], with_embedding=False)
        return IngestResult(source, "failed", doc_id, 0, exc.reason)

    @staticmethod
    def embed_chunks(chunks: Sequence[Chunk], embedder: Embedder,
                     on_batch: Callable[[int], None] | None = None) -> list[list[float]]:
        """All chunks' vectors (title and heading path in front of the text), EMBED_BATCH per embedder call;
        `on_batch(done)` after each batch (a job's progress)."""
        vectors: list[list[float]] = []
        for start in range(0, len(chunks), EMBED_BATCH):
            vectors.extend(embed_texts(embedder, [c.context_text() for c in chunks[start:start + EMBED_BATCH]]))
            if on_batch is not None:
                on_batch(len(vectors))
        return vectors

    def ingest_path(self, conn: psycopg.Connection, path: str | Path,
                    tags: Iterable[str] | None = None) -> list[IngestResult]:
        """Ingest a file, or every supported file under a folder (recursively, in name order); each file's
        source is its resolved path. Other files are "skipped" with the reason."""
        root = Path(path)
        if not root.exists():
            raise ValueError(f"{path}: no such file or folder")
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        results = []
        for file in files:
            source = str(file.resolve())
            if file.suffix.lower() not in KINDS_BY_EXTENSION:
                reason = f"unsupported extension {file.suffix or '(none)'!r}; supported: " \
                         + ", ".join(sorted(KINDS_BY_EXTENSION))
                results.append(IngestResult(source, "skipped", reason=reason))
                continue
            results.append(self.ingest(conn, source, file.read_bytes(), file.name, tags))
        return results

    def remove(self, conn: psycopg.Connection, source: str) -> bool:
        """Delete the document of `source` and its chunks; False when there is none."""
        return repo.delete_document(conn, source)

    # ---- reads
    @staticmethod
    def has_documents(conn: psycopg.Connection) -> bool:
        """Whether any document is searchable (one index probe; no embedding)."""
        return repo.has_ready_documents(conn)

    def list(self, conn: psycopg.Connection) -> list[dict]:
        """Every document row (failed ones too, with their error), by source."""
        return repo.list_documents(conn)

    def show(self, conn: psycopg.Connection, source: str) -> dict | None:
        """The document of `source` with its chunks (in order); None when there is none."""
        document = repo.document_by_source(conn, source)
        if document is None:
            return None
        return {**document, "chunks": repo.document_chunks(conn, document["id"])}

    def search(self, conn: psycopg.Connection, query: str, limit: int = 5, tags: Iterable[str] | None = None,
               document: str | None = None) -> KnowledgeSearch:
        """The passages best matching `query`, best first: see the module docstring. `tags` keeps documents with
        any of them; `document` keeps one source. A query without words finds nothing."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        if not isinstance(query, str):
            raise ValueError("query must be text")
        query = query[:MAX_QUERY_CHARS]
        tags = _clean_tags(tags) if tags is not None else None
        k = max(limit * CANDIDATES, MIN_CANDIDATES)
        vector, note = self._vector_candidates(conn, query, k, tags, document)
        similarity = dict(vector or ())
        rankings = {"vector": [i for i, _ in vector]} if vector is not None else {}
        groups = fulltext_terms(query)
        informative = self.informative(conn, groups) if groups else []
        # Words all common: their posting lists cost ~15 ms each at a million chunks and any 100 of their matches
        # rank no better than chance; the vector ranking carries such a question (full text still runs alone).
        rankings["fulltext"] = repo.fulltext_ranked(conn, groups, k, tags, document, informative) \
            if groups and (informative or vector is None) else []
        fused = fuse(rankings)[:limit]
        rows = repo.chunks_with_documents(conn, [i for i, _, _ in fused])
        hits = [KnowledgeHit(chunk_id=i, document_id=rows[i]["document_id"], source=rows[i]["source"],
                             title=rows[i]["title"], heading_path=list(rows[i]["heading_path"]),
                             page_start=rows[i]["page_start"], page_end=rows[i]["page_end"], text=rows[i]["text"],
                             score=score, matched=found, similarity=similarity.get(i),
                             coverage=coverage(query, " ".join([rows[i]["title"], *rows[i]["heading_path"],
                                                                 rows[i]["text"]])))
                for i, score, found in fused if i in rows]
        return KnowledgeSearch(hits, "hybrid" if vector is not None else "fulltext", note)

    def informative(self, conn: psycopg.Connection, groups: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
        """The query words worth a place in full text's any-word pool: those in at most `common_word_chunks` chunks
        by the planner's statistics (read once per WORD_STATISTICS_TTL; a word they do not list is rarer than
        every word they do)."""
        now = time.monotonic()
        if self._word_statistics is None or now - self._word_statistics[0] > WORD_STATISTICS_TTL:
            self._word_statistics = (now, *repo.word_statistics(conn))
        _, chunks, shares = self._word_statistics
        return [g for g in groups if chunks * sum(shares.get(form, 0.0) for form in g) <= self.common_word_chunks]

    def _vector_candidates(self, conn, query: str, k: int, tags, document
                           ) -> tuple[list[tuple[int, float]] | None, str | None]:
        """The vector ranking's (id, similarity), or (None, why not): None in sql mode, and on an embedder
        failure (logged)."""
        if not query_terms(query):  # no words: nothing to look for
            return None, None
        jobs_repo.lock_chunks_for_read(conn)  # before the recorded model is read: no reindex swap in between
        try:
            if self.mode(conn) != "pgvector":
                return None, None
            [vector] = self.active_embedder(conn).embed([query])
        except (*EMBEDDER_FAILURES, ValueError) as exc:
            why = embedder_problem(self.tenant, exc) if isinstance(exc, EMBEDDER_FAILURES) else str(exc)
            log.warning("embedder failed; knowledge search uses full text for this call",
                        extra={"tenant_id": self.tenant.tenant_id, "error": why})
            return None, f"semantic search unavailable ({why}); full-text results only"
        return repo.vector_ranked(conn, vector, k, tags, document, MIN_SIMILARITY), None


_stores: dict[str, tuple[Tenant, KnowledgeStore]] = {}
_stores_lock = threading.Lock()


def store_for(tenant: Tenant) -> KnowledgeStore:
    """The tenant's store, one per process (its embedders, a local model loaded once, are kept); a reloaded tenant
    (another Tenant object) gets a fresh one."""
    with _stores_lock:
        cached = _stores.get(tenant.tenant_id)
        if cached is None or cached[0] is not tenant:
            cached = _stores[tenant.tenant_id] = (tenant, KnowledgeStore(tenant))
        return cached[1]
