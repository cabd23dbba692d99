-- Human handoff and opt-out (issue 12): each user's conversation is answered by the bot, by a person (an operator),
-- or by nobody (the user opted out: no message of any kind is sent until they opt in again).
ALTER TABLE users
    ADD COLUMN state            text NOT NULL DEFAULT 'bot' CHECK (state IN ('bot', 'human', 'opted_out')),
    ADD COLUMN state_changed_at timestamptz,
    ADD COLUMN failures_in_row  int NOT NULL DEFAULT 0;   -- turns given up in a row: two hand the user to a person

-- Every switch of a user's state: who (user | bot | operator:<id> | system), when and why.
CREATE TABLE conversation_events (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('handoff', 'handback', 'opt_out', 'opt_in')),
    actor       text NOT NULL,
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversation_events_user ON conversation_events (user_id, id);

-- Each attempt to tell the business about a handoff (the signed outgoing webhook), with what its server answered.
CREATE TABLE handoff_webhook_attempts (
    id           bigserial PRIMARY KEY,
    event_id     bigint NOT NULL REFERENCES conversation_events(id) ON DELETE CASCADE,
    attempt      int NOT NULL,
    ok           boolean NOT NULL,
    http_status  int,
    error        text,                                    -- in words; never the URL or the secret
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX handoff_webhook_attempts_event ON handoff_webhook_attempts (event_id, attempt);

-- Messages an operator wrote (role 'operator'), with the operator's id; the bot reads them as its own side of the
-- conversation after the hand-back.
ALTER TABLE messages ADD COLUMN operator_id text;
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_role_check;
ALTER TABLE messages ADD CONSTRAINT messages_role_check CHECK (role IN ('user', 'assistant', 'system', 'operator'));
