-- Issue 17: what tokens really cost. Of a call's prompt_tokens, those the provider served from its prompt cache
-- (OpenAI's usage.prompt_tokens_details.cached_tokens, DeepSeek's prompt_cache_hit_tokens), billed at the cached
-- price; 0 where the provider reports none (and for every row written before this column).
ALTER TABLE llm_usage ADD COLUMN IF NOT EXISTS cached_prompt_tokens int NOT NULL DEFAULT 0;
