-- The operator console (issue 14): per conversation, the newest message an operator has opened, so the list can
-- show how many of the user's messages nobody has read yet. Erasing the user erases this row too.
CREATE TABLE console_reads (
    user_id               bigint PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    last_seen_message_id  bigint NOT NULL DEFAULT 0,
    operator_id           bigint,                      -- who opened it last (operators.id)
    seen_at               timestamptz NOT NULL DEFAULT now()
);
