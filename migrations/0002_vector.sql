-- Semantic memory with pgvector where the server has it. Where it does not (or the role may not create the
-- extension), this migration still succeeds and the tenant runs on full-text search (the SQL fallback).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS vector;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'pgvector is installed but this role may not create it: using the SQL fallback';
            RETURN;
        END;
        EXECUTE 'ALTER TABLE memory_chunks ADD COLUMN IF NOT EXISTS embedding vector({{embedding_dim}})';
        -- HNSW indexes at most 2000 dimensions; larger embeddings are searched exactly (per-user sets are small).
        IF {{embedding_dim}} <= 2000 THEN
            EXECUTE 'CREATE INDEX IF NOT EXISTS memory_chunks_embedding_hnsw ON memory_chunks '
                    'USING hnsw (embedding vector_cosine_ops)';
        END IF;
    ELSE
        RAISE NOTICE 'pgvector is not available on this server: using the SQL fallback';
    END IF;
END
$$;
