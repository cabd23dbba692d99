-- Delivery order across messages, and attempts that are counted before they are posted.
--
-- prev_id (0005) now also links messages: part 1 of a new message waits for the user's newest row that Infobip has
-- not accepted yet, whatever message it belongs to (replies of different turns, reminders, notices), so a user gets
-- them in the order they were queued. A row whose predecessor belongs to another message is posted even when that
-- message failed; within one reply, a failed part still stops the parts after it.
COMMENT ON COLUMN outbound_messages.prev_id IS
    'the row Infobip must accept before this one is posted: part n-1 of the same reply, or (part 1) the user''s '
    'newest row still queued when this message was queued';

-- When the last post of this row started. Its attempt was committed before the post, so a post whose answer was
-- lost (worker killed, database unreachable) still counts against the bound of retries.
ALTER TABLE outbound_messages ADD COLUMN posting_at timestamptz;

-- "The user's newest queued row", looked up by every new message.
CREATE INDEX outbound_messages_user_queued ON outbound_messages (user_id, id) WHERE status = 'queued';
