"""SQL of the tenant knowledge base: `knowledge_documents` and their `knowledge_chunks` (migration 0011).

Functions take an open connection and never commit: the caller decides the transaction. Embeddings travel as
pgvector's text form ('[0.1,0.2,...]', cast with ::vector), so no vector type needs registering; the `embedding`
column exists only where the database has pgvector (`embedding_dim` says so).
"""
from __future__ import annotations

from typing import Any, Sequence

import psycopg
from psycopg.rows import dict_row

DOCUMENT_COLUMNS = ("id, source, title, kind, content_hash, tags, status, error, chunk_count, created_at, "
                    "updated_at")
CHUNK_COLUMNS = "c.id, c.document_id, c.ordinal, c.heading_path, c.page_start, c.page_end, c.text, c.content_hash"


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form of a vector."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def embedding_dim(conn: psycopg.Connection) -> int | None:
    """The dimension of `knowledge_chunks.embedding`; None when the database has no such column (no pgvector)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = 'knowledge_chunks'::regclass "
                          "AND attname = 'embedding' AND NOT attisdropped").fetchone()
    return row["atttypmod"] if row else None


def document_by_source(conn: psycopg.Connection, source: str, *, lock: bool = False) -> dict | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {DOCUMENT_COLUMNS} FROM knowledge_documents WHERE source = %s"
                           + (" FOR UPDATE" if lock else ""), (source,)).fetchone()


def list_documents(conn: psycopg.Connection) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {DOCUMENT_COLUMNS} FROM knowledge_documents ORDER BY source").fetchall()


def save_document(conn: psycopg.Connection, *, source: str, title: str, kind: str, content_hash: str | None,
                  tags: Sequence[str], status: str, error: str | None, chunk_count: int) -> int:
    """Insert or update the document row of `source` (its id stays); returns the id."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("""
            INSERT INTO knowledge_documents (source, title, kind, content_hash, tags, status, error, chunk_count)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (source) DO UPDATE SET title = EXCLUDED.title, kind = EXCLUDED.kind,
                content_hash = EXCLUDED.content_hash, tags = EXCLUDED.tags, status = EXCLUDED.status,
                error = EXCLUDED.error, chunk_count = EXCLUDED.chunk_count, updated_at = now()
            RETURNING id
        """, (source, title, kind, content_hash, list(tags), status, error, chunk_count)).fetchone()
    return row["id"]


def set_tags(conn: psycopg.Connection, document_id: int, tags: Sequence[str]) -> None:
    conn.execute("UPDATE knowledge_documents SET tags = %s, updated_at = now() WHERE id = %s",
                 (list(tags), document_id))


def replace_chunks(conn: psycopg.Connection, document_id: int, chunks: Sequence[dict[str, Any]],
                   with_embedding: bool) -> None:
    """Delete the document's chunks and insert `chunks` (keys ordinal, heading_path, page_start, page_end, text,
    content_hash, and embedding: a vector literal or None, written only `with_embedding`)."""
    columns = ["document_id", "ordinal", "heading_path", "page_start", "page_end", "text", "content_hash"]
    values = ["%s"] * len(columns)
    if with_embedding:
        columns.append("embedding")
        values.append("%s::vector")
    rows = [[document_id, c["ordinal"], list(c["heading_path"]), c["page_start"], c["page_end"], c["text"],
             c["content_hash"]] + ([c.get("embedding")] if with_embedding else []) for c in chunks]
    with conn.cursor() as cur:
        cur.execute("DELETE FROM knowledge_chunks WHERE document_id = %s", (document_id,))
        if rows:
            cur.executemany(f"INSERT INTO knowledge_chunks ({', '.join(columns)}) VALUES ({', '.join(values)})",
                            rows)


def delete_document(conn: psycopg.Connection, source: str) -> bool:
    """Delete the document of `source` and (by cascade) its chunks; False when there is none."""
    return conn.execute("DELETE FROM knowledge_documents WHERE source = %s", (source,)).rowcount == 1


def document_chunks(conn: psycopg.Connection, document_id: int) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {CHUNK_COLUMNS} FROM knowledge_chunks c WHERE c.document_id = %s "
                           "ORDER BY c.ordinal", (document_id,)).fetchall()


def _filters(tags: Sequence[str] | None, source: str | None) -> tuple[str, dict]:
    """WHERE conditions on the document `d`: ready, any of `tags`, this `source`."""
    where = ["d.status = 'ready'"]
    if tags:
        where.append("d.tags && %(tags)s::text[]")
    if source is not None:
        where.append("d.source = %(source)s")
    return " AND ".join(where), {"tags": list(tags or []), "source": source}


def vector_ranked(conn: psycopg.Connection, query_vector: Sequence[float], limit: int,
                  tags: Sequence[str] | None = None, source: str | None = None, min_similarity: float = 0.0
                  ) -> list[tuple[int, float]]:
    """(id, cosine similarity) of the chunks nearest the query (similarity at least `min_similarity`), nearest
    first. Filtered searches rank exactly over the filtered rows (MATERIALIZED), so a filter never empties an
    approximate (HNSW) candidate list."""
    where, params = _filters(tags, source)
    params.update(q=vector_literal(query_vector), limit=limit, max_distance=1.0 - min_similarity)
    fence = "MATERIALIZED" if (tags or source is not None) else "NOT MATERIALIZED"
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"""
            WITH candidates AS {fence} (
                SELECT c.id, c.embedding FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id
                WHERE {where} AND c.embedding IS NOT NULL
            )
            SELECT id, 1 - (embedding <=> %(q)s::vector) AS similarity FROM candidates
            WHERE embedding <=> %(q)s::vector <= %(max_distance)s
            ORDER BY embedding <=> %(q)s::vector, id LIMIT %(limit)s
        """, params).fetchall()
    return [(r["id"], float(r["similarity"])) for r in rows]


def fulltext_ranked(conn: psycopg.Connection, tsquery: str, limit: int, tags: Sequence[str] | None = None,
                    source: str | None = None) -> list[int]:
    """Ids of the chunks matching `tsquery` (to_tsquery 'simple' syntax) in their heading path and text or in
    their document's title, best ts_rank first."""
    where, params = _filters(tags, source)
    params.update(q=tsquery, limit=limit)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"""
            SELECT c.id FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id
            WHERE {where} AND (c.tsv @@ to_tsquery('simple', %(q)s) OR d.title_tsv @@ to_tsquery('simple', %(q)s))
            ORDER BY ts_rank(c.tsv || d.title_tsv, to_tsquery('simple', %(q)s)) DESC, c.id LIMIT %(limit)s
        """, params).fetchall()
    return [r["id"] for r in rows]


def chunks_with_documents(conn: psycopg.Connection, chunk_ids: Sequence[int]) -> dict[int, dict]:
    """The chunks of `chunk_ids` with their document's source, title and tags, by chunk id."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"""
            SELECT {CHUNK_COLUMNS}, d.source, d.title, d.tags FROM knowledge_chunks c
            JOIN knowledge_documents d ON d.id = c.document_id WHERE c.id = ANY(%s)
        """, (list(chunk_ids),)).fetchall()
    return {r["id"]: r for r in rows}


def has_ready_documents(conn: psycopg.Connection) -> bool:
    """Whether the tenant has any searchable document (a turn skips knowledge search, and its query embedding,
    when it has none)."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM knowledge_documents WHERE status = 'ready')").fetchone()[0]
