-- Knowledge ingestion and reindex jobs (issue 13): one row per `wabot kb add` / API upload / URL / reindex, with
-- its progress, so the CLI and the admin API can show it while a `knowledge` worker runs it. The uploaded bytes
-- wait here (bounded, shared/knowledge/jobs.py MAX_UPLOAD_BYTES) until the job ends, so any worker host can read them.
CREATE TABLE knowledge_jobs (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('ingest', 'reindex')),
    source        text,                     -- the document's source (file path, name or URL); NULL for reindex
    filename      text,
    content_type  text,
    url           text,                     -- fetched by the worker (shared/knowledge/fetch.py)
    content       bytea,                    -- the upload, until the job ends (then NULL)
    tags          text[],                   -- NULL: a known document keeps its tags
    allow_private boolean NOT NULL DEFAULT false,  -- URL on a private address: only the CLI may allow it
    embedding_model text,                   -- reindex: the model (and dimension) the chunks move to
    embedding_dim integer,
    status        text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    result        text,                     -- added | updated | unchanged | retagged | failed | reindexed
    document_id   bigint,
    chunks_done   integer NOT NULL DEFAULT 0,
    chunks_total  integer,
    error         text,
    attempts      integer NOT NULL DEFAULT 0,
    lease_until   timestamptz,              -- a running attempt holds the job until then (renewed per batch)
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX knowledge_jobs_created ON knowledge_jobs (created_at DESC, id DESC);
CREATE INDEX knowledge_jobs_source ON knowledge_jobs (source, id DESC);

-- Which embedding model (and dimension) `knowledge_chunks.embedding` holds: queries are embedded with it, ingests
-- write with it, and a reindex switches it in the same transaction that swaps the vectors. No row: the tenant's
-- configured model (databases from before this migration; the first semantic ingest records it).
CREATE TABLE knowledge_embedding_model (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    model         text NOT NULL,
    dim           integer NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- A reindex writes the new vectors here (any dimension) and swaps them in at the end, in one transaction.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN
        EXECUTE 'CREATE TABLE knowledge_reindex_vectors ('
                '  job_id bigint NOT NULL REFERENCES knowledge_jobs(id) ON DELETE CASCADE,'
                '  chunk_id bigint NOT NULL REFERENCES knowledge_chunks(id) ON DELETE CASCADE,'
                '  embedding vector NOT NULL,'
                '  PRIMARY KEY (job_id, chunk_id))';
    END IF;
END
$$;
