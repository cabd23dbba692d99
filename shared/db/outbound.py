"""SQL of the outbox (`outbound_messages`): send rows, their per-row send lock, the chains that keep a user's
messages in order, delivery statuses and stalled sends. Functions take an open connection so the caller decides
the transaction boundaries (and so what is committed before a send task is enqueued)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

OUTBOUND_LOCK = 0x6F757462  # "outb": advisory lock class of the per-row send lock


def create(conn: psycopg.Connection, *, message_id: str, user_id: int, to_number: str, body: str | None,
           content: dict, kind: str = "text", part: int = 1, source_message: int | None = None,
           reminder_id: int | None = None, request_id: str | None = None, prev_id: int | None = None,
           chain_id: int | None = None, status: str = "queued", reason: str | None = None,
           next_attempt_at: datetime | None = None) -> int:
    """Record a send in the outbox. The send task is enqueued only after this row is committed."""
    row = conn.execute(
        """
        INSERT INTO outbound_messages (message_id, user_id, source_message, reminder_id, part, kind, to_number,
                                       body, content, request_id, prev_id, chain_id, status, reason,
                                       next_attempt_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, COALESCE(%s, now())) RETURNING id
        """,
        (message_id, user_id, source_message, reminder_id, part, kind, to_number, body, Jsonb(content), request_id,
         prev_id, chain_id, status, reason, next_attempt_at),
    ).fetchone()
    return row["id"]


def create_fallback(conn: psycopg.Connection, *, fallback_of: int, message_id: str, user_id: int,
                    to_number: str, body: str, content: dict, request_id: str | None) -> int | None:
    """The template that replaces reply `fallback_of` after its window closed. None when one exists already: the
    unique index makes the fallback happen once per reply, however many reports ask for it."""
    row = conn.execute(
        """
        INSERT INTO outbound_messages (message_id, user_id, kind, to_number, body, content, request_id, fallback_of,
                                       source_message, reminder_id, next_attempt_at)
        SELECT %s, %s, 'template', %s, %s, %s, %s, o.id, o.source_message, o.reminder_id, now()
        FROM outbound_messages o WHERE o.id = %s
        ON CONFLICT (fallback_of) WHERE fallback_of IS NOT NULL DO NOTHING
        RETURNING id
        """,
        (message_id, user_id, to_number, body, Jsonb(content), request_id, fallback_of),
    ).fetchone()
    return row["id"] if row else None


def try_lock(conn: psycopg.Connection, outbound_id: int) -> bool:
    """Take the send lock of one outbox row, or say it is taken. Session-level (it survives the commits around the
    post, so no transaction stays open while Infobip answers) and released by `unlock`, or by Postgres when the
    worker's connection dies. Guarantee: two tasks never post one row at the same time. Ids that differ by a
    multiple of 2**31 share a key: the only cost is a "busy" retry."""
    return conn.execute("SELECT pg_try_advisory_lock(%s::int, %s::int) AS ok",
                        (OUTBOUND_LOCK, outbound_id % 2**31)).fetchone()["ok"]


def unlock(conn: psycopg.Connection, outbound_id: int) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s::int, %s::int)", (OUTBOUND_LOCK, outbound_id % 2**31))


def get(conn: psycopg.Connection, outbound_id: int) -> dict | None:
    return conn.execute("SELECT * FROM outbound_messages WHERE id = %s", (outbound_id,)).fetchone()


def status_of(conn: psycopg.Connection, outbound_id: int) -> str | None:
    row = conn.execute("SELECT status FROM outbound_messages WHERE id = %s", (outbound_id,)).fetchone()
    return row["status"] if row else None


def exists(conn: psycopg.Connection, message_id: str) -> bool:
    """Whether a row has this Infobip messageId (a report for it can be applied)."""
    return conn.execute("SELECT 1 FROM outbound_messages WHERE message_id = %s",
                        (message_id,)).fetchone() is not None


def has_failed_post(conn: psycopg.Connection, outbound_id: int) -> bool:
    """Whether a post of this row failed (an error is recorded): a row merely on its way has none."""
    row = conn.execute("SELECT error IS NOT NULL AS failing FROM outbound_messages WHERE id = %s",
                       (outbound_id,)).fetchone()
    return bool(row and row["failing"])


def latest_queued(conn: psycopg.Connection, user_id: int) -> int | None:
    """The user's newest row Infobip has not accepted yet (any message): a new message waits for it, so replies of
    different turns, reminders and notices reach the user in the order they were queued."""
    row = conn.execute("SELECT id FROM outbound_messages WHERE user_id = %s AND status = 'queued' "
                       "ORDER BY id DESC LIMIT 1", (user_id,)).fetchone()
    return row["id"] if row else None


def predecessor(conn: psycopg.Connection, prev_id: int) -> dict | None:
    """The row a send waits for, read under a share lock: when its own send is recording its result right now, this
    waits for that commit, so a waiter never reads a stale `queued` after the predecessor already looked for its
    waiters (which would leave the waiter to the 10-minute sweep)."""
    return conn.execute("SELECT id, status, chain_id FROM outbound_messages WHERE id = %s FOR SHARE",
                        (prev_id,)).fetchone()


def begin_post(conn: psycopg.Connection, outbound_id: int, prev_id: int | None) -> int | None:
    """Count the attempt before posting (committed by the caller before the HTTP call), so a post whose answer is
    lost (worker killed, commit failed) still counts against the bound. Returns the attempt number, or None when the
    row is no longer `queued` (a report or a stopped chain moved it) or now waits for another row than `prev_id`
    (a template fallback took the place of its predecessor)."""
    row = conn.execute(
        """
        UPDATE outbound_messages SET attempts = attempts + 1, posting_at = now(), next_attempt_at = now(),
            updated_at = now()
        WHERE id = %s AND status = 'queued' AND prev_id IS NOT DISTINCT FROM %s RETURNING attempts
        """,
        (outbound_id, prev_id),
    ).fetchone()
    return row["attempts"] if row else None


def waiting_on(conn: psycopg.Connection, outbound_ids: list[int]) -> list[int]:
    """Every queued row that waits for one of these rows: the next part of the same reply and the first row of any
    later message (two transactions may have picked the same predecessor, so there can be several)."""
    if not outbound_ids:
        return []
    rows = conn.execute("SELECT id FROM outbound_messages WHERE prev_id = ANY(%s) AND status = 'queued' ORDER BY id",
                        (list(outbound_ids),)).fetchall()
    return [r["id"] for r in rows]


def next_part(conn: psycopg.Connection, outbound_id: int) -> list[int]:
    """The queued rows that wait for this one to be accepted (all of them)."""
    return waiting_on(conn, [outbound_id])


def repoint_waiters(conn: psycopg.Connection, from_ids: list[int], to_id: int) -> int:
    """Make the rows waiting on `from_ids` wait on `to_id` instead (a reply replaced by its template fallback:
    later messages still come after it)."""
    if not from_ids:
        return 0
    return conn.execute("UPDATE outbound_messages SET prev_id = %s, updated_at = now() "
                        "WHERE prev_id = ANY(%s) AND status = 'queued'", (to_id, list(from_ids))).rowcount


def chain_parts(conn: psycopg.Connection, head_id: int) -> list[dict]:
    """Every part of the reply whose part 1 is `head_id`, in order."""
    return conn.execute(
        "SELECT id, part, status, body FROM outbound_messages WHERE id = %s OR chain_id = %s ORDER BY part",
        (head_id, head_id),
    ).fetchall()


def stop_queued_parts(conn: psycopg.Connection, head_id: int, after_part: int, status: str,
                      reason: str) -> list[int]:
    """Give up the queued parts after `after_part` of a reply (a part before them failed or was replaced). Returns
    their ids: rows of other messages waiting on them must be published (or re-pointed) by the caller."""
    rows = conn.execute(
        """
        UPDATE outbound_messages SET status = %s, reason = %s, next_attempt_at = NULL, updated_at = now()
        WHERE chain_id = %s AND part > %s AND status = 'queued'
        RETURNING id
        """,
        (status, reason, head_id, after_part),
    ).fetchall()
    return [r["id"] for r in rows]


def record_accepted(conn: psycopg.Connection, outbound_id: int, response: Any, status_group: str | None,
                    status_name: str | None) -> None:
    """Infobip took the message (HTTP 2xx). A report that overtook this answer keeps its later status. The attempt was
    counted by `begin_post`."""
    conn.execute(
        """
        UPDATE outbound_messages SET
            status = CASE WHEN status = 'queued' OR status = 'failed' THEN 'sent' ELSE status END,
            status_group = COALESCE(status_group, %s), status_name = COALESCE(status_name, %s),
            infobip_response = %s, error = NULL, reason = NULL, sent_at = now(),
            next_attempt_at = NULL, updated_at = now()
        WHERE id = %s
        """,
        (status_group, status_name, Jsonb(response), outbound_id),
    )


def record_error(conn: psycopg.Connection, outbound_id: int, error: dict | None, final: bool,
                 reason: str | None = None, next_attempt_at: datetime | None = None) -> str | None:
    """A failed post (its attempt was counted by `begin_post`): `final` marks a still-queued row failed (with
    Infobip's error); otherwise it stays queued for the retry due at `next_attempt_at`. A row a report already moved
    on (an earlier post was accepted after all) keeps its status. Returns the row's status."""
    row = conn.execute(
        """
        UPDATE outbound_messages SET status = CASE WHEN %s AND status = 'queued' THEN 'failed' ELSE status END,
            error = COALESCE(%s, error), reason = CASE WHEN status = 'queued' THEN %s ELSE reason END,
            next_attempt_at = CASE WHEN %s OR status <> 'queued' THEN NULL ELSE COALESCE(%s, now()) END,
            updated_at = now()
        WHERE id = %s
        RETURNING status
        """,
        (final, Jsonb(error) if error is not None else None, reason, final, next_attempt_at, outbound_id),
    ).fetchone()
    return row["status"] if row else None


def set_reason(conn: psycopg.Connection, outbound_id: int, reason: str) -> None:
    conn.execute("UPDATE outbound_messages SET reason = %s, updated_at = now() WHERE id = %s", (reason, outbound_id))


def lock_by_message_id(conn: psycopg.Connection, message_id: str) -> dict | None:
    """The row with this Infobip messageId, locked until the commit: two reports of one message apply in turn."""
    return conn.execute("SELECT * FROM outbound_messages WHERE message_id = %s FOR UPDATE",
                        (message_id,)).fetchone()


def record_report(conn: psycopg.Connection, outbound_id: int, *, status: str, status_group: str | None,
                  status_name: str | None, error: dict | None) -> None:
    """Write what a delivery report says (the caller decided it moves the row forward)."""
    conn.execute(
        """
        UPDATE outbound_messages SET status = %s, status_group = %s, status_name = %s,
            error = COALESCE(%s, error),
            delivered_at = CASE WHEN %s = 'delivered' THEN COALESCE(delivered_at, now()) ELSE delivered_at END,
            next_attempt_at = NULL, updated_at = now()
        WHERE id = %s
        """,
        (status, status_group, status_name, Jsonb(error) if error else None, status, outbound_id),
    )


def record_seen(conn: psycopg.Connection, message_id: str, seen_at: datetime | None) -> dict | None:
    """Seen is the furthest a message gets: applied whatever came before; the first seen time is kept. Returns the
    row, or None when no row has this messageId (yet)."""
    return conn.execute(
        """
        UPDATE outbound_messages SET status = 'seen', seen_at = COALESCE(seen_at, %s, now()),
            delivered_at = COALESCE(delivered_at, %s, now()), next_attempt_at = NULL, updated_at = now()
        WHERE message_id = %s RETURNING *
        """,
        (seen_at, seen_at, message_id),
    ).fetchone()


def stalled(conn: psycopg.Connection, due_before: datetime, limit: int = 100) -> list[int]:
    """Queued sends whose task should have run before `due_before` but did not (a publish lost after the commit, a
    task that crashed): the first queued part of each reply only, later parts wait for it."""
    rows = conn.execute(
        """
        UPDATE outbound_messages SET next_attempt_at = now(), updated_at = now()
        WHERE id IN (
            SELECT o.id FROM outbound_messages o
            LEFT JOIN outbound_messages p ON p.id = o.prev_id
            WHERE o.status = 'queued' AND o.next_attempt_at < %s AND (p.id IS NULL OR p.status <> 'queued')
            ORDER BY o.next_attempt_at LIMIT %s
            FOR UPDATE OF o SKIP LOCKED)
        RETURNING id
        """,
        (due_before, limit),
    ).fetchall()
    return [r["id"] for r in rows]


def refuse(conn: psycopg.Connection, outbound_id: int, reason: str) -> bool:
    """A queued row that must not be sent after all (its user opted out meanwhile): `not_sent` with the reason.
    False when the row left `queued` meanwhile."""
    row = conn.execute("UPDATE outbound_messages SET status = 'not_sent', reason = %s, next_attempt_at = NULL, "
                       "updated_at = now() WHERE id = %s AND status = 'queued' RETURNING id",
                       (reason, outbound_id)).fetchone()
    return row is not None
