-- Operator console sign-in (issue 14): an operator may also have a password (a scrypt hash, never the password);
-- NULL: API token only.
ALTER TABLE operators ADD COLUMN IF NOT EXISTS password_hash text;
