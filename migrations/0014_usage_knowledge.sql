-- Which business passages (knowledge_chunks ids) each model call's prompt carried (issue 13): an answer can be traced
-- to its sources. No foreign key: usage rows outlive the chunks (a re-ingested document gets new chunk ids).
ALTER TABLE llm_usage ADD COLUMN IF NOT EXISTS knowledge_chunks bigint[] NOT NULL DEFAULT '{}';
