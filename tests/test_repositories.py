"""Message-state SQL lives in repositories (issue 9): the domain packages that move messages through their states
call `shared/db/` functions and write no SQL themselves, and the repositories know nothing of the domain."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQL_FREE = ("shared/conversation", "shared/delivery", "shared/handoff", "shared/knowledge")
REPOSITORIES = ("users", "messages", "outbound", "pending_reports", "reminders", "usage", "conversation_events",
                "knowledge")
DOMAIN = ("shared.conversation", "shared.delivery", "shared.tools", "shared.agents", "shared.llm")


def _is_text(node: ast.AST) -> bool:
    """A string literal, an f-string, or strings joined with `+`: what SQL text is written as."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    return isinstance(node, ast.BinOp) and (_is_text(node.left) or _is_text(node.right))


def _sql_calls(tree: ast.AST) -> list[int]:
    """Lines of `<anything>.execute(<text>, ...)` calls."""
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "execute"
            and n.args and _is_text(n.args[0])]


def test_the_check_finds_inline_sql():
    source = 'conn.execute("SELECT 1")\ncur.execute(f"UPDATE t SET a = {x}")\nconn.execute("A " + "B")\nrepo.run(1)'
    assert _sql_calls(ast.parse(source)) == [1, 2, 3]


def test_conversation_and_delivery_write_no_sql():
    found = {f"{p.relative_to(ROOT)}:{line}" for pkg in SQL_FREE for p in sorted((ROOT / pkg).rglob("*.py"))
             for line in _sql_calls(ast.parse(p.read_text(), str(p)))}
    assert not found, f"SQL written outside the repositories (move it to shared/db/): {sorted(found)}"


def test_repositories_do_not_import_the_domain():
    for name in REPOSITORIES:
        path = ROOT / "shared" / "db" / f"{name}.py"
        imported = {n.module for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in imported if m and m.startswith(DOMAIN)}, f"{path.name} imports the domain"
