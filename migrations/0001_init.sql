-- Core schema of a tenant database. Each tenant has its own database, so no table carries a tenant_id.

CREATE TABLE users (
    id               bigserial PRIMARY KEY,
    phone            text NOT NULL UNIQUE,          -- the user's WhatsApp number, digits only
    name             text,
    last_inbound_at  timestamptz,                   -- start of the 24-hour customer-care window
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The conversation: what users wrote (role 'user') and what the bot answered (role 'assistant').
CREATE TABLE messages (
    id                  bigserial PRIMARY KEY,
    user_id             bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role                text NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    infobip_message_id  text,                       -- inbound: Infobip's messageId (the deduplication key)
    message_type        text NOT NULL DEFAULT 'TEXT',
    body                text,                       -- the text the LLM sees
    payload             jsonb,                      -- the message object as Infobip sent it
    status              text NOT NULL,              -- inbound: received|answered|failed|ignored; assistant: stored
    reply_to            bigint REFERENCES messages(id),
    request_id          text,
    received_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX messages_infobip_message_id_key ON messages (infobip_message_id)
    WHERE infobip_message_id IS NOT NULL;
CREATE INDEX messages_user_created ON messages (user_id, id DESC);

-- Every send to Infobip, with Infobip's answer and the delivery/seen reports that follow.
CREATE TABLE outbound_messages (
    id               bigserial PRIMARY KEY,
    message_id       text NOT NULL UNIQUE,          -- our id, sent as Infobip's messageId
    user_id          bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    source_message   bigint REFERENCES messages(id),-- the assistant message this send carries
    reminder_id      bigint,
    part             int NOT NULL DEFAULT 1,
    kind             text NOT NULL DEFAULT 'text',  -- text | template
    to_number        text NOT NULL,
    body             text,
    content          jsonb NOT NULL,                -- the request body sent to Infobip
    status           text NOT NULL DEFAULT 'queued',-- queued|sent|failed|not_sent|delivered|seen|undeliverable|expired|rejected
    status_group     text,
    status_name      text,
    infobip_response jsonb,
    error            jsonb,
    attempts         int NOT NULL DEFAULT 0,
    request_id       text,
    sent_at          timestamptz,
    delivered_at     timestamptz,
    seen_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbound_messages_status ON outbound_messages (status, created_at);

-- Items and memories the bot keeps for a user (user_id NULL: knowledge every user of the tenant may retrieve).
CREATE TABLE memory_chunks (
    id          bigserial PRIMARY KEY,
    user_id     bigint REFERENCES users(id) ON DELETE CASCADE,
    kind        text NOT NULL DEFAULT 'memory',     -- memory | note | event | task | knowledge
    title       text,
    content     text NOT NULL,
    starts_at   timestamptz,
    metadata    jsonb NOT NULL DEFAULT '{}',
    tsv         tsvector GENERATED ALWAYS AS (to_tsvector('simple', coalesce(title, '') || ' ' || content)) STORED,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX memory_chunks_user ON memory_chunks (user_id, kind, starts_at);
CREATE INDEX memory_chunks_tsv ON memory_chunks USING gin (tsv);

-- LLM provider configurations; the active row wins over tenants.yaml. Keys are named, never stored.
CREATE TABLE llm_providers (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    provider      text NOT NULL,
    base_url      text,
    model_chat    text,
    model_embed   text,
    api_key_envs  text[] NOT NULL DEFAULT '{}',     -- names of environment variables holding the keys
    fallback      text,                             -- name of another row to use when this one fails
    is_active     boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX llm_providers_one_active ON llm_providers (is_active) WHERE is_active;

CREATE TABLE agents (
    name        text PRIMARY KEY,
    enabled     boolean NOT NULL DEFAULT true,
    config      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reminders (
    id                 bigserial PRIMARY KEY,
    user_id            bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    text               text NOT NULL,
    due_at             timestamptz NOT NULL,
    status             text NOT NULL DEFAULT 'pending',  -- pending|sending|sent|cancelled|failed
    late               boolean NOT NULL DEFAULT false,
    outbound_id        bigint REFERENCES outbound_messages(id),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reminders_due ON reminders (due_at) WHERE status = 'pending';

CREATE TABLE llm_usage (
    id                 bigserial PRIMARY KEY,
    user_id            bigint REFERENCES users(id) ON DELETE SET NULL,
    request_id         text,
    provider           text NOT NULL,
    model              text NOT NULL,
    prompt_tokens      int NOT NULL DEFAULT 0,
    completion_tokens  int NOT NULL DEFAULT 0,
    total_tokens       int NOT NULL DEFAULT 0,
    latency_ms         int NOT NULL DEFAULT 0,
    tools_used         text[] NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX llm_usage_created ON llm_usage (created_at);
