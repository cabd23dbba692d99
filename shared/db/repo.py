"""SQL for users, messages, the outbox and usage in a tenant database. Functions take an open connection so the
caller decides the transaction boundaries (and so what is committed before a task is enqueued)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from shared.delivery.infobip.client import accepted_status

# Outbound statuses ordered by how far a message got; a report never moves a message backwards.
STATUS_RANK = {"queued": 0, "failed": 1, "not_sent": 1, "sent": 2, "undeliverable": 3, "expired": 3,
               "rejected": 3, "delivered": 4, "seen": 5}
REPORT_STATUS = {"PENDING": "sent", "UNDELIVERABLE": "undeliverable", "DELIVERED": "delivered",
                 "EXPIRED": "expired", "REJECTED": "rejected"}


def upsert_user(conn: psycopg.Connection, phone: str, name: str | None, inbound_at: datetime | None) -> int:
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


def insert_inbound(conn: psycopg.Connection, *, user_id: int, infobip_message_id: str, message_type: str,
                   body: str | None, payload: dict, received_at: datetime | None, request_id: str | None,
                   status: str = "received") -> int | None:
    """Store an inbound message once. Returns its id, or None when this messageId was stored before."""
    row = conn.execute(
        """
        INSERT INTO messages (user_id, role, infobip_message_id, message_type, body, payload, status,
                              received_at, request_id)
        VALUES (%s, 'user', %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (infobip_message_id) WHERE infobip_message_id IS NOT NULL DO NOTHING
        RETURNING id
        """,
        (user_id, infobip_message_id, message_type, body, Jsonb(payload), status, received_at, request_id),
    ).fetchone()
    return row["id"] if row else None


def get_message_by_infobip_id(conn: psycopg.Connection, infobip_message_id: str) -> dict | None:
    return conn.execute("SELECT * FROM messages WHERE infobip_message_id = %s", (infobip_message_id,)).fetchone()


def set_message_status(conn: psycopg.Connection, message_id: int, status: str) -> None:
    conn.execute("UPDATE messages SET status = %s, updated_at = now() WHERE id = %s", (status, message_id))


def recent_history(conn: psycopg.Connection, user_id: int, limit: int = 20, before_id: int | None = None) -> list[dict]:
    """The user's last `limit` text messages (oldest first), for the prompt."""
    rows = conn.execute(
        """
        SELECT id, role, body FROM messages
        WHERE user_id = %s AND body IS NOT NULL AND (%s::bigint IS NULL OR id < %s)
        ORDER BY id DESC LIMIT %s
        """,
        (user_id, before_id, before_id, limit),
    ).fetchall()
    return list(reversed(rows))


def insert_assistant_message(conn: psycopg.Connection, *, user_id: int, body: str, reply_to: int | None,
                             request_id: str | None) -> int:
    row = conn.execute(
        """
        INSERT INTO messages (user_id, role, body, status, reply_to, request_id)
        VALUES (%s, 'assistant', %s, 'stored', %s, %s) RETURNING id
        """,
        (user_id, body, reply_to, request_id),
    ).fetchone()
    return row["id"]


def create_outbound(conn: psycopg.Connection, *, message_id: str, user_id: int, to_number: str, body: str | None,
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


def create_fallback_outbound(conn: psycopg.Connection, *, fallback_of: int, message_id: str, user_id: int,
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


def outbound_user(conn: psycopg.Connection, user_id: int) -> dict | None:
    """What a send needs to know about its user: the number, the name for templates, the window start."""
    return conn.execute("SELECT id, phone, name, last_inbound_at FROM users WHERE id = %s", (user_id,)).fetchone()


OUTBOUND_LOCK = 0x6F757462  # "outb": advisory lock class of the per-row send lock


def try_lock_outbound(conn: psycopg.Connection, outbound_id: int) -> bool:
    """Take the send lock of one outbox row, or say it is taken. Session-level (it survives the commits around the
    post, so no transaction stays open while Infobip answers) and released by `unlock_outbound`, or by Postgres when
    the worker's connection dies. Guarantee: two tasks never post one row at the same time. Ids that differ by a
    multiple of 2**31 share a key: the only cost is a "busy" retry."""
    return conn.execute("SELECT pg_try_advisory_lock(%s::int, %s::int) AS ok",
                        (OUTBOUND_LOCK, outbound_id % 2**31)).fetchone()["ok"]


def unlock_outbound(conn: psycopg.Connection, outbound_id: int) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s::int, %s::int)", (OUTBOUND_LOCK, outbound_id % 2**31))


def get_outbound(conn: psycopg.Connection, outbound_id: int) -> dict | None:
    return conn.execute("SELECT * FROM outbound_messages WHERE id = %s", (outbound_id,)).fetchone()


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


def outbound_status(conn: psycopg.Connection, outbound_id: int) -> str | None:
    row = conn.execute("SELECT status FROM outbound_messages WHERE id = %s", (outbound_id,)).fetchone()
    return row["status"] if row else None


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


def record_send_accepted(conn: psycopg.Connection, outbound_id: int, response: Any) -> None:
    """Infobip took the message (HTTP 2xx). A report that overtook this answer keeps its later status. The attempt was
    counted by `begin_post`."""
    status = accepted_status(response)
    conn.execute(
        """
        UPDATE outbound_messages SET
            status = CASE WHEN status = 'queued' OR status = 'failed' THEN 'sent' ELSE status END,
            status_group = COALESCE(status_group, %s), status_name = COALESCE(status_name, %s),
            infobip_response = %s, error = NULL, reason = NULL, sent_at = now(),
            next_attempt_at = NULL, updated_at = now()
        WHERE id = %s
        """,
        (status.get("groupName"), status.get("name"), Jsonb(response), outbound_id),
    )


def record_send_error(conn: psycopg.Connection, outbound_id: int, error: dict | None, final: bool,
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


def set_outbound_reason(conn: psycopg.Connection, outbound_id: int, reason: str) -> None:
    conn.execute("UPDATE outbound_messages SET reason = %s, updated_at = now() WHERE id = %s", (reason, outbound_id))


def apply_delivery_report(conn: psycopg.Connection, message_id: str, report: dict) -> dict | None:
    """Apply a delivery report; a report never moves a message back (a late PENDING after DELIVERED is ignored),
    and applying one twice changes nothing more.

    Returns the row (with `applied`: whether the report moved it) or None when no row has this messageId (yet).
    """
    group = ((report.get("status") or {}).get("groupName") or "").upper()
    new_status = REPORT_STATUS.get(group, "sent")
    error = report.get("error") or None
    if error and (error.get("id") in (0, "0") or error.get("name") == "NO_ERROR"):
        error = None
    row = conn.execute("SELECT * FROM outbound_messages WHERE message_id = %s FOR UPDATE", (message_id,)).fetchone()
    if row is None:
        return None
    applied = STATUS_RANK.get(new_status, 0) >= STATUS_RANK.get(row["status"], 0)
    if applied:
        conn.execute(
            """
            UPDATE outbound_messages SET status = %s, status_group = %s, status_name = %s,
                error = COALESCE(%s, error),
                delivered_at = CASE WHEN %s = 'delivered' THEN COALESCE(delivered_at, now()) ELSE delivered_at END,
                next_attempt_at = NULL, updated_at = now()
            WHERE id = %s
            """,
            (new_status, group or None, (report.get("status") or {}).get("name"),
             Jsonb(error) if error else None, new_status, row["id"]),
        )
    return {**row, "status": new_status if applied else row["status"], "applied": applied}


def apply_seen_report(conn: psycopg.Connection, message_id: str, seen_at: datetime | None) -> dict | None:
    """Seen is the furthest a message gets: applied whatever came before; the first seen time is kept."""
    return conn.execute(
        """
        UPDATE outbound_messages SET status = 'seen', seen_at = COALESCE(seen_at, %s, now()),
            delivered_at = COALESCE(delivered_at, %s, now()), next_attempt_at = NULL, updated_at = now()
        WHERE message_id = %s RETURNING *
        """,
        (seen_at, seen_at, message_id),
    ).fetchone()


def outbound_exists(conn: psycopg.Connection, message_id: str) -> bool:
    return conn.execute("SELECT 1 FROM outbound_messages WHERE message_id = %s",
                        (message_id,)).fetchone() is not None


def store_pending_report(conn: psycopg.Connection, message_id: str, kind: str, report: dict) -> int:
    """Keep a report whose message is not stored yet; `take_pending_reports` hands it over later."""
    return conn.execute(
        "INSERT INTO pending_reports (message_id, kind, report) VALUES (%s, %s, %s) RETURNING id",
        (message_id, kind, Jsonb(report)),
    ).fetchone()["id"]


def take_pending_reports(conn: psycopg.Connection, message_id: str) -> list[dict]:
    """Remove and return the kept reports of a message (oldest first). Two takers never get the same report."""
    rows = conn.execute("DELETE FROM pending_reports WHERE message_id = %s RETURNING id, kind, report",
                        (message_id,)).fetchall()
    return sorted(rows, key=lambda r: r["id"])


def purge_pending_reports(conn: psycopg.Connection, older_than: datetime) -> int:
    """Forget kept reports whose message never appeared (e.g. sent by another system on the same account)."""
    return conn.execute("DELETE FROM pending_reports WHERE received_at < %s", (older_than,)).rowcount


def stalled_outbound(conn: psycopg.Connection, due_before: datetime, limit: int = 100) -> list[int]:
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


def record_usage(conn: psycopg.Connection, *, user_id: int | None, request_id: str | None, provider: str,
                 model: str, prompt_tokens: int, completion_tokens: int, latency_ms: int,
                 tools_used: list[str]) -> None:
    conn.execute(
        """
        INSERT INTO llm_usage (user_id, request_id, provider, model, prompt_tokens, completion_tokens, total_tokens,
                               latency_ms, tools_used)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (user_id, request_id, provider, model, prompt_tokens, completion_tokens, prompt_tokens + completion_tokens,
         latency_ms, tools_used),
    )
