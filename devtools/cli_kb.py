"""`wabot kb add|list|show|remove|search --tenant ID`: a tenant's knowledge base (issue 13) from the command line.

- `add PATH [--tags T ...]`: a file, or every supported file under a folder; unchanged files write nothing;
- `list`, `show SOURCE`, `remove SOURCE`;
- `search QUERY [--limit N] [--tags T ...] [--document SOURCE]`: hybrid search, as the bot will use it.
Each command runs in one transaction of the tenant's database (committed when it succeeds).
"""
from __future__ import annotations

import argparse
import sys

from devtools.cli_admin import _conn, _fail, _tenant


def _store(tenant):
    from shared.knowledge.store import KnowledgeStore

    return KnowledgeStore(tenant)


def _tags(values) -> list[str]:
    return [t for v in values or [] for t in v.split(",") if t.strip()]


def cmd_kb_add(args) -> int:
    from shared.memory.store import EMBEDDER_FAILURES, embedder_problem

    _settings, tenant = _tenant(args.tenant)
    try:
        with _conn(tenant) as conn:
            tags = _tags(args.tags) if args.tags is not None else None  # no --tags: a known document keeps its tags
            results = _store(tenant).ingest_path(conn, args.path, tags=tags)
    except ValueError as exc:
        return _fail(str(exc), 2)
    except EMBEDDER_FAILURES as exc:
        return _fail(f"nothing changed: the embedder failed ({embedder_problem(tenant, exc)})")
    for r in results:
        detail = f"{r.chunks} chunk(s)" if r.status not in ("skipped",) else ""
        print(f"{r.status:<9} {r.source}  {detail}{'  ' + r.reason if r.reason else ''}".rstrip())
    counts = {s: sum(r.status == s for r in results) for s in dict.fromkeys(r.status for r in results)}
    print(f"tenant {tenant.tenant_id}: " + (", ".join(f"{n} {s}" for s, n in counts.items()) or "no files"))
    return 1 if counts.get("failed") else 0


def cmd_kb_list(args) -> int:
    _settings, tenant = _tenant(args.tenant)
    with _conn(tenant) as conn:
        rows = _store(tenant).list(conn)
    for r in rows:
        extra = f"  error: {r['error']}" if r["error"] else ""
        tags = f"  [{', '.join(r['tags'])}]" if r["tags"] else ""
        print(f"{r['status']:<6} {r['chunk_count']:>4} chunk(s)  {r['kind'] or '-':<8} {r['source']}  "
              f"\"{r['title']}\"{tags}{extra}")
    if not rows:
        print(f"tenant {tenant.tenant_id}: no documents (wabot kb add PATH --tenant {tenant.tenant_id})")
    return 0


def cmd_kb_show(args) -> int:
    _settings, tenant = _tenant(args.tenant)
    with _conn(tenant) as conn:
        doc = _store(tenant).show(conn, args.source)
    if doc is None:
        return _fail(f"no document {args.source!r} in tenant {tenant.tenant_id}")
    print(f"{doc['source']}: \"{doc['title']}\" ({doc['kind'] or '-'}, {doc['status']}, {doc['chunk_count']} "
          f"chunk(s), tags: {', '.join(doc['tags']) or '-'}, updated {doc['updated_at']:%Y-%m-%d %H:%M})")
    if doc["error"]:
        print(f"error: {doc['error']}")
    for c in doc["chunks"]:
        print(f"--- #{c['ordinal']} {' > '.join(c['heading_path']) or '(no heading)'}{_pages(c)}")
        print(c["text"])
    return 0


def _pages(row) -> str:
    if row["page_start"] is None:
        return ""
    same = row["page_end"] in (None, row["page_start"])
    return f" (p. {row['page_start']})" if same else f" (pp. {row['page_start']}-{row['page_end']})"


def cmd_kb_remove(args) -> int:
    _settings, tenant = _tenant(args.tenant)
    with _conn(tenant) as conn:
        removed = _store(tenant).remove(conn, args.source)
    if not removed:
        return _fail(f"no document {args.source!r} in tenant {tenant.tenant_id}")
    print(f"removed {args.source} and its chunks")
    return 0


def cmd_kb_search(args) -> int:
    _settings, tenant = _tenant(args.tenant)
    try:
        with _conn(tenant) as conn:
            found = _store(tenant).search(conn, args.query, limit=args.limit, tags=_tags(args.tags) or None,
                                          document=args.document)
    except ValueError as exc:
        return _fail(str(exc), 2)
    print(f"[{found.mode}]" + (f" {found.note}" if found.note else ""))
    for n, h in enumerate(found.hits, start=1):
        where = " > ".join([h.title, *h.heading_path])
        print(f"{n}. {h.score:.4f} {where}{_pages(h.__dict__)}  ({h.source}; {'+'.join(h.matched)})")
        print("   " + h.text.replace("\n", "\n   "))
    if not found.hits:
        print("no passages found")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `kb` on the `wabot` parser."""
    kb = sub.add_parser("kb", help="a tenant's knowledge base: documents the bot answers from").add_subparsers(
        dest="kb_command", required=True)

    def command(name: str, fn, help_text: str):
        q = kb.add_parser(name, help=help_text)
        q.add_argument("--tenant", required=True)
        q.set_defaults(fn=fn)
        return q

    q = command("add", cmd_kb_add, "ingest a file or a folder (text, Markdown, HTML, PDF, DOCX)")
    q.add_argument("path")
    q.add_argument("--tags", nargs="+", help="tags of these documents (words, or comma-separated)")
    command("list", cmd_kb_list, "the tenant's documents")
    command("show", cmd_kb_show, "a document and its chunks").add_argument("source")
    command("remove", cmd_kb_remove, "delete a document and its chunks").add_argument("source")
    q = command("search", cmd_kb_search, "hybrid search, as the bot will use it")
    q.add_argument("query")
    q.add_argument("--limit", type=int, default=5)
    q.add_argument("--tags", nargs="+", help="only documents with any of these tags")
    q.add_argument("--document", help="only this document (its source)")
