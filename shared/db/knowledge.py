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


# Full text ranks (ts_rank) at most this many chunks matching every query word, plus as many matching any word
# (and as many from documents whose title matches). Reading and ranking a match costs ~10 us; 50 or 100 made no
# difference to recall on bench_knowledge's labelled set, and 50 keeps a million-chunk search under 10 ms.
FULLTEXT_POOL = 50
HNSW_EF_SEARCH = 40  # pgvector's default: an HNSW scan returns at most this many rows


def tsquery_of(groups: Sequence[Sequence[str]], op: str) -> str:
    """A to_tsquery ('simple') text: each group's whole-word forms OR-ed, the groups joined by `op` ("&" or "|").
    Forms are letters and digits only (shared.knowledge.terms), so nothing needs quoting."""
    return f" {op} ".join("(" + " | ".join(f"'{form}'" for form in group) + ")" for group in groups)


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
    first. Unfiltered, the HNSW index ranks (approximate: the nearest `limit` the graph walk finds, with
    hnsw.ef_search raised to `limit` for this transaction when above pgvector's 40); a chunk of a document that is
    not ready is dropped after the walk (such documents have no chunks, ingest replaces them). Filtered searches
    rank exactly over the filtered rows (MATERIALIZED), so a filter never empties an approximate candidate list."""
    where, params = _filters(tags, source)
    params.update(q=vector_literal(query_vector), limit=limit, max_distance=1.0 - min_similarity)
    if tags or source is not None:
        sql = f"""
            WITH candidates AS MATERIALIZED (
                SELECT c.id, c.embedding FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id
                WHERE {where} AND c.embedding IS NOT NULL
            )
            SELECT id, 1 - (embedding <=> %(q)s::vector) AS similarity FROM candidates
            WHERE embedding <=> %(q)s::vector <= %(max_distance)s
            ORDER BY embedding <=> %(q)s::vector, id LIMIT %(limit)s"""
    else:  # ORDER BY the distance alone, no join in the way: what lets the planner walk the HNSW index
        sql = f"""
            SELECT id, 1 - distance AS similarity FROM (
                SELECT c.id, c.embedding <=> %(q)s::vector AS distance FROM knowledge_chunks c
                WHERE c.embedding IS NOT NULL
                  AND EXISTS (SELECT 1 FROM knowledge_documents d WHERE d.id = c.document_id AND {where})
                ORDER BY c.embedding <=> %(q)s::vector LIMIT %(limit)s
            ) nearest WHERE distance <= %(max_distance)s ORDER BY distance, id"""
    with conn.cursor(row_factory=dict_row) as cur:
        if limit <= HNSW_EF_SEARCH or tags or source is not None:
            rows = cur.execute(sql, params).fetchall()
        else:  # a transaction (a savepoint inside the caller's) so that SET LOCAL holds in autocommit mode too
            with conn.transaction():
                cur.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(limit),))
                rows = cur.execute(sql, params).fetchall()
    return [(r["id"], float(r["similarity"])) for r in rows]


def fulltext_ranked(conn: psycopg.Connection, groups: Sequence[Sequence[str]], limit: int,
                    tags: Sequence[str] | None = None, source: str | None = None,
                    pool_groups: Sequence[Sequence[str]] | None = None) -> list[int]:
    """Ids of the chunks matching the query words `groups` (one tuple of whole-word forms per word: a chunk holds
    the word when it holds any form) in their heading path and text or in their document's title, best first by
    ts_rank of the chunk plus ts_rank of its title (any word counts). Ranks only a bounded pool, each part read
    through the GIN index: the first FULLTEXT_POOL chunks holding every word (with two words or more), and the
    first FULLTEXT_POOL holding any word of `pool_groups` (default all; the store leaves out words so common that
    reading their posting lists costs more than they tell), plus the same from documents whose title matches. A
    query matching more chunks than the pool may miss a better one: the vector ranking usually finds it."""
    where, params = _filters(tags, source)
    pool_groups = list(groups if pool_groups is None else pool_groups)
    pools = ([tsquery_of(groups, "&")] if len(groups) > 1 else []) + (
        [tsquery_of(pool_groups, "|")] if pool_groups else [])
    if not pools:  # one word, and a common one: it alone
        pools = [tsquery_of(groups, "|")]
    params.update({f"pool{i}": q for i, q in enumerate(pools)}, q=tsquery_of(groups, "|"), limit=limit,
                  pool=FULLTEXT_POOL)
    # Each part is a MATERIALIZED CTE read with LIMIT from outside: a CTE is planned for all its rows (so the GIN
    # bitmap, not a seq or index scan betting that 100 matches come early: when the words are rarer than the
    # planner guessed that bet read 100k rows, 300 ms at a million chunks) and runs only as far as it is read.
    # Unfiltered, chunk parts skip the join (the ranking below drops chunks of documents that are not ready).
    filtered = bool(tags) or source is not None
    chunk_part = ("SELECT c.id FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id "
                  f"WHERE {where} AND " if filtered else "SELECT c.id FROM knowledge_chunks c WHERE ")
    parts = {}
    for i in range(len(pools)):
        parts[f"chunks{i}"] = f"{chunk_part}c.tsv @@ to_tsquery('simple', %(pool{i})s)"
        parts[f"titles{i}"] = (f"SELECT c.id FROM knowledge_documents d JOIN knowledge_chunks c ON c.document_id = "
                               f"d.id WHERE {where} AND d.title_tsv @@ to_tsquery('simple', %(pool{i})s)")
    ctes = ", ".join(f"{name} AS MATERIALIZED ({sql})" for name, sql in parts.items())
    matched = " UNION ".join(f"(SELECT id FROM {name} LIMIT %(pool)s)" for name in parts)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"""
            WITH {ctes}, matched AS MATERIALIZED ({matched})
            SELECT c.id FROM matched m JOIN knowledge_chunks c ON c.id = m.id
            JOIN knowledge_documents d ON d.id = c.document_id AND d.status = 'ready'
            ORDER BY ts_rank(c.tsv, to_tsquery('simple', %(q)s)) + ts_rank(d.title_tsv, to_tsquery('simple', %(q)s))
                DESC, c.id LIMIT %(limit)s
        """, params).fetchall()
    return [r["id"] for r in rows]


def word_statistics(conn: psycopg.Connection) -> tuple[float, dict[str, float]]:
    """(estimated chunk count, {word: share of chunks holding it}) for the most common words of the chunks'
    tsvectors, from the planner's statistics (ANALYZE; autovacuum keeps them fresh): no scan. Before the first
    ANALYZE there are none: ({} and the count pg_class has)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("""
            SELECT greatest(c.reltuples, 0) AS chunks, s.most_common_elems::text::text[] AS words,
                   s.most_common_elem_freqs AS shares
            FROM pg_class c LEFT JOIN pg_stats s ON s.schemaname = current_schema()
                 AND s.tablename = 'knowledge_chunks' AND s.attname = 'tsv'
            WHERE c.oid = 'knowledge_chunks'::regclass""").fetchone()
    words, shares = row["words"] or [], row["shares"] or []
    return float(row["chunks"]), dict(zip(words, shares))  # zip stops before the 3 summary numbers


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
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT EXISTS (SELECT 1 FROM knowledge_documents WHERE status = 'ready') AS any").fetchone()
    return row["any"]
