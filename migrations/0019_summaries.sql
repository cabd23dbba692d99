-- Rolling conversation summaries (issue 17): when a user's history no longer fits the prompt's history budget, a
-- background task (queue `summaries`, shared/conversation/summaries.py) folds the older messages into one short
-- summary per user, which every later prompt carries ahead of the recent history.
-- `covers_to`: the newest message id the summary includes; the prompt shows only messages after it. It only ever
-- moves forward (the task writes WHERE covers_to is what it read), so a redelivered task writes nothing twice.
-- `requested_at`: when a turn last asked for an update (a turn asks at most once per few minutes; a lost task is
-- asked for again after that). Erasing the user deletes the row (ON DELETE CASCADE, and forget_user deletes it).
CREATE TABLE IF NOT EXISTS conversation_summaries (
    user_id      bigint PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    summary      text NOT NULL DEFAULT '',
    covers_to    bigint NOT NULL DEFAULT 0,      -- messages.id; 0: nothing summarised yet
    updates      integer NOT NULL DEFAULT 0,
    requested_at timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
