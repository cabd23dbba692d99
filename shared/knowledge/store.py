"""The knowledge store of one tenant (issue 13): documents in, passages out.

- `ingest` parses and chunks a document (shared.knowledge) and stores it under its `source` (a file path, a URL
  or a name). An unchanged document (same content hash) writes nothing ("unchanged"; new tags alone are
  "retagged"). A changed one has all its new chunks embedded first, in batches, and only then its old chunks
  replaced, so an embedder failure raises before anything is written and the old version stays. A document that
  cannot be read is recorded as `failed` when new; a known one keeps its last good version.
- `search` is hybrid: cosine similarity (pgvector) and full-text (ts_rank on `tsv`), each its top candidates,
  merged by reciprocal rank fusion (score = sum of 1 / (60 + rank)). In sql mode (the tenant's
  `vector_store: sql_fallback`, or no pgvector in the database) and when the embedder fails, full-text alone ranks,
  and the outcome says why.
- Every method runs in the caller's transaction and never commits. All SQL is in shared.db.knowledge.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import psycopg

from shared.db import knowledge as repo
from shared.errors import ConfigError
from shared.knowledge.chunking import Chunk, chunk
from shared.knowledge.documents import KINDS_BY_EXTENSION, DocumentError, parse
from shared.llm.base import LLMError
from shared.memory.embedders import EmbeddingStore
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
class _Prepared:
    title: str
    kind: str
    content_hash: str
    chunks: list[Chunk] = field(default_factory=list)


def fulltext_query(query: str) -> str | None:
    """A to_tsquery ('simple') matching any of the query's words as a prefix; None when it has no words."""
    terms = query_terms(query)
    return " | ".join(f"'{t}':*" for t in terms) if terms else None  # terms are letters/digits only


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


def _clean_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        raise ValueError("tags must be a list of words, not one string")
    cleaned = [t.strip().lower() for t in tags if isinstance(t, str) and t.strip()]
    return sorted(set(cleaned))


class KnowledgeStore(EmbeddingStore):
    """Knowledge of one tenant (its embedder built on first use: shared.memory.embedders.EmbeddingStore)."""

    def mode(self, conn: psycopg.Connection) -> str:
        """"pgvector" when the tenant wants it and the database has `knowledge_chunks.embedding`, else "sql".
        Raises ConfigError when the embedder's dimension does not fit the column."""
        dim = repo.embedding_dim(conn)
        if self.tenant.vector_store != "pgvector" or dim is None:
            return "sql"
        if dim > 0 and dim != self.embedder.dim:
            raise ConfigError(f"tenant {self.tenant.tenant_id}: the database stores {dim}-dimension embeddings but "
                              f"embedding model {self.tenant.embedding_model!r} has {self.embedder.dim}")
        return "pgvector"

    # ---- writes
    def ingest(self, conn: psycopg.Connection, source: str, data: bytes, filename: str,
               tags: Iterable[str] | None = None, content_type: str | None = None) -> IngestResult:
        """Store (or refresh) the document of `source`: see the module docstring. `tags` replace the document's
        tags; None keeps them. Embedder failures raise (EMBEDDER_FAILURES) before anything is written."""
        if not isinstance(source, str) or not source.strip():
            raise ValueError("source must be a non-empty text (a file path, a URL or a name)")
        existing = repo.document_by_source(conn, source, lock=True)
        tags = _clean_tags(tags) if tags is not None else sorted(existing["tags"]) if existing else []
        try:
            prepared = self._prepare(data, filename, content_type)
        except DocumentError as exc:
            return self._record_failure(conn, source, existing, filename, tags, exc)
        if existing and existing["status"] == "ready" and existing["content_hash"] == prepared.content_hash:
            if sorted(existing["tags"]) == tags:
                return IngestResult(source, "unchanged", existing["id"], existing["chunk_count"])
            repo.set_tags(conn, existing["id"], tags)
            return IngestResult(source, "retagged", existing["id"], existing["chunk_count"])
        semantic = self.mode(conn) == "pgvector"
        vectors = self._embed_chunks(prepared.chunks) if semantic else None  # before any write
        doc_id = repo.save_document(conn, source=source, title=prepared.title, kind=prepared.kind,
                                    content_hash=prepared.content_hash, tags=tags, status="ready", error=None,
                                    chunk_count=len(prepared.chunks))
        rows = [{"ordinal": c.ordinal, "heading_path": c.heading_path, "page_start": c.page_start,
                 "page_end": c.page_end, "text": c.text, "content_hash": c.content_hash,
                 "embedding": repo.vector_literal(vectors[i]) if vectors else None}
                for i, c in enumerate(prepared.chunks)]
        repo.replace_chunks(conn, doc_id, rows, with_embedding=repo.embedding_dim(conn) is not None)
        return IngestResult(source, "updated" if existing else "added", doc_id, len(rows))

    @staticmethod
    def _prepare(data: bytes, filename: str, content_type: str | None) -> _Prepared:
        document = parse(data, filename=filename, content_type=content_type)
        chunks = chunk(document)
        if not chunks:
            raise DocumentError(filename, "no text to index")
        return _Prepared(document.title, document.kind, document.content_hash, chunks)

    def _record_failure(self, conn, source: str, existing: dict | None, filename: str, tags: list[str],
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

    def _embed_chunks(self, chunks: Sequence[Chunk]) -> list[list[float]]:
        """All chunks' vectors (title and heading path in front of the text), EMBED_BATCH per embedder call."""
        vectors: list[list[float]] = []
        for start in range(0, len(chunks), EMBED_BATCH):
            texts = [c.context_text() for c in chunks[start:start + EMBED_BATCH]]
            got = self.embedder.embed(texts)
            if len(got) != len(texts):
                raise LLMError(f"embedder {self.embedder.name} returned {len(got)} vectors for {len(texts)} texts",
                               retryable=False)
            vectors.extend(got)
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
        tsquery = fulltext_query(query)
        rankings["fulltext"] = repo.fulltext_ranked(conn, tsquery, k, tags, document) if tsquery else []
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

    def _vector_candidates(self, conn, query: str, k: int, tags, document
                           ) -> tuple[list[tuple[int, float]] | None, str | None]:
        """The vector ranking's (id, similarity), or (None, why not): None in sql mode, and on an embedder
        failure (logged)."""
        if fulltext_query(query) is None:  # no words: nothing to look for
            return None, None
        try:
            if self.mode(conn) != "pgvector":
                return None, None
            [vector] = self.embedder.embed([query])
        except (*EMBEDDER_FAILURES, ValueError) as exc:
            why = embedder_problem(self.tenant, exc) if isinstance(exc, EMBEDDER_FAILURES) else str(exc)
            log.warning("embedder failed; knowledge search uses full text for this call",
                        extra={"tenant_id": self.tenant.tenant_id, "error": why})
            return None, f"semantic search unavailable ({why}); full-text results only"
        return repo.vector_ranked(conn, vector, k, tags, document, MIN_SIMILARITY), None
