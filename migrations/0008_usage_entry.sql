-- Which configured provider entry answered a call (tenants.yaml `name`, default primary/fallback, or the
-- llm_providers row): a fallback is told from its primary even when both are `openai`.
ALTER TABLE llm_usage ADD COLUMN IF NOT EXISTS provider_entry text;
