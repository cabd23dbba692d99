-- The console's Playground and `wabot chat` (issue 14): operators talk to their bot through the real pipeline as a
-- playground user. Such a user is a number no WhatsApp account can have (20 digits starting with 999: E.164 numbers
-- have at most 15), so the flag is a function of the number: nothing can set it on a real user, nor clear it.
ALTER TABLE users ADD COLUMN IF NOT EXISTS playground boolean
    GENERATED ALWAYS AS (phone ~ '^999[0-9]{17}$') STORED;

-- Usage of playground turns, told apart by the Usage page (they still count toward the daily budget: the tokens
-- cost the same; see shared/db/usage.py). Copied from the user when the row is written: it stays after a reset.
ALTER TABLE llm_usage ADD COLUMN IF NOT EXISTS playground boolean NOT NULL DEFAULT false;

-- What the turn that wrote an assistant message did (agent, intent, tools, tokens, passages): the Playground shows it
-- under each reply. NULL for other messages.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS meta jsonb;
