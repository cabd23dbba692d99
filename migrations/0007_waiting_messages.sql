-- The recovery sweep looks for user messages still waiting for a turn every minute: index just those.
CREATE INDEX IF NOT EXISTS messages_waiting ON messages (created_at) WHERE role = 'user' AND status = 'received';
