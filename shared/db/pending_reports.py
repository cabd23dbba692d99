"""SQL of `pending_reports`: delivery and seen reports that arrived before their outbox row was known, kept until
it is (shared.delivery.reports hands them over)."""
from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb


def store(conn: psycopg.Connection, message_id: str, kind: str, report: dict) -> int:
    """Keep a report whose message is not stored yet; `take` hands it over later."""
    return conn.execute(
        "INSERT INTO pending_reports (message_id, kind, report) VALUES (%s, %s, %s) RETURNING id",
        (message_id, kind, Jsonb(report)),
    ).fetchone()["id"]


def take(conn: psycopg.Connection, message_id: str) -> list[dict]:
    """Remove and return the kept reports of a message (oldest first). Two takers never get the same report."""
    rows = conn.execute("DELETE FROM pending_reports WHERE message_id = %s RETURNING id, kind, report",
                        (message_id,)).fetchall()
    return sorted(rows, key=lambda r: r["id"])


def purge(conn: psycopg.Connection, older_than: datetime) -> int:
    """Forget kept reports whose message never appeared (e.g. sent by another system on the same account)."""
    return conn.execute("DELETE FROM pending_reports WHERE received_at < %s", (older_than,)).rowcount
