-- Delivery you can trust (outbound): ordered multi-part replies, the template fallback, retry bookkeeping,
-- and delivery/seen reports that arrive before we know their message.

ALTER TABLE outbound_messages
    ADD COLUMN prev_id         bigint REFERENCES outbound_messages(id), -- part n-1: posted (accepted) before this one
    ADD COLUMN chain_id        bigint REFERENCES outbound_messages(id), -- part 1 of the reply (NULL on part 1 itself)
    ADD COLUMN fallback_of     bigint REFERENCES outbound_messages(id), -- template sent because this reply's window closed
    ADD COLUMN reason          text,                                    -- why a message is not_sent/failed, in words
    ADD COLUMN next_attempt_at timestamptz;                             -- when the send is (re)tried; stalled rows are re-published

-- One template fallback per reply, however many of its parts report a closed session: the fallback never loops.
CREATE UNIQUE INDEX outbound_messages_fallback_once ON outbound_messages (fallback_of) WHERE fallback_of IS NOT NULL;
CREATE INDEX outbound_messages_prev ON outbound_messages (prev_id) WHERE prev_id IS NOT NULL;
CREATE INDEX outbound_messages_chain ON outbound_messages (chain_id) WHERE chain_id IS NOT NULL;
CREATE INDEX outbound_messages_queued ON outbound_messages (next_attempt_at) WHERE status = 'queued';

-- Reports for a messageId we have not stored (or not finished sending) yet: kept, applied when the send records
-- its result, never dropped.
CREATE TABLE pending_reports (
    id           bigserial PRIMARY KEY,
    message_id   text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('delivery', 'seen')),
    report       jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_reports_message ON pending_reports (message_id);
CREATE INDEX pending_reports_received ON pending_reports (received_at);
