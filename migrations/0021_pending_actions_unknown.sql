-- A confirmed action whose turn died after the yes claimed it (status `running` when the user's next turn starts)
-- is never run again; that turn tells the user its outcome is unknown and ends it `unknown`
-- (shared/tools/confirmation.py). Every turn looks for a `pending` or `running` action: one partial index for both.
ALTER TABLE pending_actions DROP CONSTRAINT pending_actions_status_check;
ALTER TABLE pending_actions ADD CONSTRAINT pending_actions_status_check
    CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled', 'expired', 'unknown'));
DROP INDEX pending_actions_waiting;
CREATE INDEX pending_actions_waiting ON pending_actions (user_id, id) WHERE status IN ('pending', 'running');
