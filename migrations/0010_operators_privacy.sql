-- Operators of the admin API, the audit log, users' pending privacy requests, and what keeps a forgotten user's
-- data from coming back (issue 12).

-- People (or tools) allowed to call /api/v1/tenants/<this tenant>/...: a random token, shown once, stored hashed.
CREATE TABLE operators (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    token_hash  text NOT NULL UNIQUE,                -- sha256 hex of the token
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
-- A name names one active operator; a revoked name may be given again.
CREATE UNIQUE INDEX operators_active_name ON operators (name) WHERE revoked_at IS NULL;

-- What was done to whom, without personal data: the subject is a salted hash of the phone, never the phone.
CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    actor         text NOT NULL,                     -- operator:<name> | cli:<os user> | user (the user asked)
    action        text NOT NULL,                     -- user.export | user.forget | ...
    subject_hash  text,
    detail        jsonb NOT NULL DEFAULT '{}',       -- counts and ids of ours, never texts or numbers
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_created ON audit_log (created_at);
CREATE INDEX audit_log_subject ON audit_log (subject_hash);

-- The salt of the subject hashes: one random value per tenant database, written on first use.
CREATE TABLE audit_salt (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    salt  text NOT NULL
);

-- A user asked by message to have their data erased: the bot asked "reply YES"; the request waits until it expires.
CREATE TABLE privacy_requests (
    user_id     bigint PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    kind        text NOT NULL DEFAULT 'forget' CHECK (kind IN ('forget')),
    language    text NOT NULL DEFAULT 'en',
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Our messageIds of a forgotten user's sends (random ids, no personal data): a delivery or seen report that
-- arrives after the erasure is then kept without the number it names.
CREATE TABLE forgotten_messages (
    message_id    text PRIMARY KEY,
    forgotten_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX forgotten_messages_at ON forgotten_messages (forgotten_at);

CREATE FUNCTION pending_report_of_forgotten() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM forgotten_messages WHERE message_id = NEW.message_id) THEN
        NEW.report := NEW.report - 'to' - 'from';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER pending_reports_forgotten BEFORE INSERT ON pending_reports
    FOR EACH ROW EXECUTE FUNCTION pending_report_of_forgotten();
