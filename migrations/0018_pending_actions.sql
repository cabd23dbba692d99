-- Tool calls waiting for the user's yes (issue 15, shared/tools/confirmation.py): a destructive MCP tool or a tool
-- the tenant lists under `confirm.tools` is not run when the model asks; the bot tells the user what it is about
-- to do and runs it only after an explicit yes in the next message, before `expires_at`.
-- status: pending -> running (claimed by the yes, committed before the call: a confirmed action runs at most once)
--         -> done | failed;  pending -> cancelled (any other answer, a newer request) | expired (answered too late).
-- Erasing the user erases these rows too.
CREATE TABLE pending_actions (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    tool        text NOT NULL,
    arguments   jsonb NOT NULL,
    summary     text NOT NULL,                 -- what the user was told the bot is about to do
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled', 'expired')),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    resolved_at timestamptz,
    outcome     text                           -- the tool's result as the model saw it (capped), or why it ended
);
CREATE INDEX pending_actions_waiting ON pending_actions (user_id, id) WHERE status = 'pending';
