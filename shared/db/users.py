"""SQL of the `users` table: one row per WhatsApp number of a tenant. Functions take an open connection so the
caller decides the transaction boundaries."""
from __future__ import annotations

import hashlib
from datetime import datetime

import psycopg

BOT, HUMAN, OPTED_OUT = "bot", "human", "opted_out"  # users.state (re-exported by shared.handoff.state)

# Playground users (migration 0017): 20 digits starting with 999, a number no WhatsApp account has (E.164 numbers
# have at most 15 digits); `users.playground` is generated from the number, so it can be neither set nor cleared.
PLAYGROUND_PREFIX = "999"
PLAYGROUND_DIGITS = 20


def playground_phone(key: str) -> str:
    """The playground number of `key` (e.g. `operator:<id>` for the console, `cli:<name>` for `wabot chat`):
    stable, so the conversation continues across sessions, and never a real number."""
    digest = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    width = PLAYGROUND_DIGITS - len(PLAYGROUND_PREFIX)
    return PLAYGROUND_PREFIX + str(digest % 10**width).zfill(width)


def is_playground_phone(phone: str) -> bool:
    """The same test as the generated column `users.playground`."""
    return len(phone) == PLAYGROUND_DIGITS and phone.startswith(PLAYGROUND_PREFIX) and phone.isdigit()


def upsert_user(conn: psycopg.Connection, phone: str, name: str | None, inbound_at: datetime | None) -> int:
    """The user's id, created on first contact; a later message never moves `last_inbound_at` back."""
    row = conn.execute(
        """
        INSERT INTO users (phone, name, last_inbound_at) VALUES (%s, %s, %s)
        ON CONFLICT (phone) DO UPDATE SET
            name = COALESCE(EXCLUDED.name, users.name),
            last_inbound_at = GREATEST(users.last_inbound_at, EXCLUDED.last_inbound_at),
            updated_at = now()
        RETURNING id
        """,
        (phone, name, inbound_at),
    ).fetchone()
    return row["id"]


def get_user(conn: psycopg.Connection, user_id: int) -> dict | None:
    """What a reply or a send needs to know about its user: the number, the name for templates, the window
    start."""
    return conn.execute("SELECT id, phone, name, last_inbound_at, state, state_changed_at, playground FROM users "
                        "WHERE id = %s", (user_id,)).fetchone()


def last_inbound_at(conn: psycopg.Connection, user_id: int) -> datetime | None:
    """When the user last wrote: the start of the 24-hour window."""
    row = conn.execute("SELECT last_inbound_at FROM users WHERE id = %s", (user_id,)).fetchone()
    return row["last_inbound_at"] if row else None


# ---------------------------------------------------------------- conversation state (bot | human | opted_out)

def state_of(conn: psycopg.Connection, user_id: int) -> str | None:
    """The user's conversation state, or None for an unknown user."""
    row = conn.execute("SELECT state FROM users WHERE id = %s", (user_id,)).fetchone()
    return row["state"] if row else None


def lock_state(conn: psycopg.Connection, user_id: int) -> dict | None:
    """The user's row (id, phone, name, last_inbound_at, state, state_changed_at), locked until the commit: two
    switches of one user's state apply one after the other."""
    return conn.execute("SELECT id, phone, name, last_inbound_at, state, state_changed_at FROM users "
                        "WHERE id = %s FOR UPDATE", (user_id,)).fetchone()


def set_state(conn: psycopg.Connection, user_id: int, state: str) -> None:
    """Move the user to `state` now (the transaction's time: rows queued before it are older)."""
    conn.execute("UPDATE users SET state = %s, state_changed_at = now(), failures_in_row = 0, updated_at = now() "
                 "WHERE id = %s", (state, user_id))


def count_failure(conn: psycopg.Connection, user_id: int) -> int:
    """One more turn given up for this user; returns how many in a row."""
    row = conn.execute("UPDATE users SET failures_in_row = failures_in_row + 1 WHERE id = %s "
                       "RETURNING failures_in_row", (user_id,)).fetchone()
    return row["failures_in_row"] if row else 0


def reset_failures(conn: psycopg.Connection, user_id: int) -> None:
    """The bot answered: the count of failures in a row starts again."""
    conn.execute("UPDATE users SET failures_in_row = 0 WHERE id = %s AND failures_in_row <> 0", (user_id,))


def human_idle_since(conn: psycopg.Connection, user_id: int) -> datetime | None:
    """The last sign of a person handling the conversation: its switch to `human` or an operator's latest
    message, whichever is later."""
    row = conn.execute(
        """
        SELECT GREATEST(u.state_changed_at,
                        (SELECT max(m.created_at) FROM messages m WHERE m.user_id = u.id AND m.role = 'operator'))
               AS since
        FROM users u WHERE u.id = %s
        """, (user_id,)).fetchone()
    return row["since"] if row else None


def idle_with_a_person(conn: psycopg.Connection, before: datetime, limit: int) -> list[int]:
    """Users handled by a person with no sign of one (switch, operator message) since `before`."""
    rows = conn.execute(
        """
        SELECT u.id FROM users u
        WHERE u.state = 'human'
          AND GREATEST(u.state_changed_at,
                       (SELECT max(m.created_at) FROM messages m WHERE m.user_id = u.id AND m.role = 'operator'))
              < %s
        ORDER BY u.id LIMIT %s
        """, (before, limit)).fetchall()
    return [r["id"] for r in rows]


def opted_out_since(conn: psycopg.Connection, user_id: int) -> datetime | None:
    """When the user opted out (the switch's transaction time), or None when they have not."""
    row = conn.execute("SELECT state_changed_at FROM users WHERE id = %s AND state = %s",
                       (user_id, OPTED_OUT)).fetchone()
    return row["state_changed_at"] if row else None


# ---------------------------------------------------------------- playground users (migration 0017)

def is_playground(conn: psycopg.Connection, user_id: int) -> bool:
    """Whether the user is a playground user: nothing of theirs goes to Infobip."""
    row = conn.execute("SELECT playground FROM users WHERE id = %s", (user_id,)).fetchone()
    return bool(row and row["playground"])


def playground_user_id(conn: psycopg.Connection, phone: str) -> int | None:
    """The playground user with this number, or None (never written yet, or reset since)."""
    row = conn.execute("SELECT id FROM users WHERE phone = %s AND playground", (phone,)).fetchone()
    return row["id"] if row else None


def delete_playground_user(conn: psycopg.Connection, user_id: int) -> bool:
    """Forget a playground user and, through the foreign keys, everything of theirs (messages, memory, reminders,
    sends, state); their usage rows stay (user NULL, still marked playground). Never touches a real user."""
    return conn.execute("DELETE FROM users WHERE id = %s AND playground", (user_id,)).rowcount > 0
