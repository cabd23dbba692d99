-- Tenant knowledge documents (issue 13): one row per source (a file path, a URL or a name), its chunks with their
-- structure (heading path, pages), full-text search on every chunk, and the embedding where pgvector exists.
CREATE TABLE knowledge_documents (
    id            bigserial PRIMARY KEY,
    source        text NOT NULL UNIQUE,                -- file path, URL or name: what re-ingesting matches on
    title         text NOT NULL DEFAULT '',
    kind          text NOT NULL DEFAULT '',            -- text | markdown | html | pdf | docx
    content_hash  text,                                -- sha256 of the normalised text (NULL when never parsed)
    tags          text[] NOT NULL DEFAULT '{}',
    status        text NOT NULL DEFAULT 'ready' CHECK (status IN ('ready', 'failed')),
    error         text,
    chunk_count   integer NOT NULL DEFAULT 0,
    title_tsv     tsvector GENERATED ALWAYS AS (to_tsvector('simple', title)) STORED,  -- titles are searched too
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX knowledge_documents_tags ON knowledge_documents USING gin (tags);
CREATE INDEX knowledge_documents_title_tsv ON knowledge_documents USING gin (title_tsv);

-- array_to_string is STABLE in general (element output functions); for text[] it is immutable, as a generated
-- column needs.
CREATE FUNCTION knowledge_heading_text(text[]) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(array_to_string($1, ' '), '') $$;

CREATE TABLE knowledge_chunks (
    id            bigserial PRIMARY KEY,
    document_id   bigint NOT NULL REFERENCES knowledge_documents(id) ON DELETE CASCADE,
    ordinal       integer NOT NULL,
    heading_path  text[] NOT NULL DEFAULT '{}',
    page_start    integer,
    page_end      integer,
    text          text NOT NULL,
    content_hash  text NOT NULL DEFAULT '',
    tsv           tsvector GENERATED ALWAYS AS
                      (to_tsvector('simple', knowledge_heading_text(heading_path) || ' ' || text)) STORED,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (document_id, ordinal)
);
CREATE INDEX knowledge_chunks_tsv ON knowledge_chunks USING gin (tsv);

-- The embedding exactly where 0002_vector.sql gave memory_chunks one: the extension exists in this database
-- (0002 created it, or decided it could not), with the tenant's dimension and the same HNSW limit.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN
        EXECUTE 'ALTER TABLE knowledge_chunks ADD COLUMN IF NOT EXISTS embedding vector({{embedding_dim}})';
        IF {{embedding_dim}} <= 2000 THEN
            EXECUTE 'CREATE INDEX IF NOT EXISTS knowledge_chunks_embedding_hnsw ON knowledge_chunks '
                    'USING hnsw (embedding vector_cosine_ops)';
        END IF;
    ELSE
        RAISE NOTICE 'pgvector is not available in this database: knowledge is searched by full text only';
    END IF;
END
$$;
