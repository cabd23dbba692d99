"""`bench_turns.py --profile N`: py-spy on the inbound, outbound and one web worker under the mock-model load, and
the database statements of a turn (log_statement=all on the embedded PostgreSQL for the same window).

py-spy (PyPI, not a project dependency): `.venv/bin/pip install py-spy`. Samples are of non-idle threads (py-spy's
default); a sample's cost goes to its leaf frame (self) and to every distinct function on its stack (inclusive).
"""
from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

RATE = 20
HZ = 200
OURS = ("/shared/", "/workers/", "/ingress/")
PLUMBING = ("shared/", "workers/", "ingress/", "threading", "thread.py", "<", "click")  # left out of the library list


def _pyspy() -> str:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else (shutil.which("py-spy") or "py-spy")


def _web_worker(master: int) -> int:
    kids = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(kids[0]) if kids else master


def _frame_key(frame: str) -> tuple[str, str]:
    """('shared/db/messages.py', 'insert_inbound') or ('psycopg', 'execute') from py-spy's 'func (file:line)'."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    func, path = (m.group(1), m.group(2)) if m else (frame, "?")
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py"), func
    for mark in OURS:
        if mark in path:
            return mark.strip("/") + "/" + path.split(mark, 1)[1], func
    return path.rsplit("/", 1)[-1] if "python3" in path else path, func


def analyse(raw: Path, seconds: float, turns: int, top: int = 18) -> list[str]:
    """Self and inclusive shares of functions, and the share of each library, from py-spy's raw output."""
    total, self_c, incl, libs, ours_incl = 0, collections.Counter(), collections.Counter(), collections.Counter(), \
        collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count, frames = int(n), [_frame_key(f) for f in stack.split(";") if "(" in f]
        if not frames:
            continue
        total += count
        self_c[frames[-1]] += count
        libs[frames[-1][0].split("/", 1)[0] if frames[-1][0].startswith(("shared", "workers", "ingress"))
             else frames[-1][0]] += count
        for key in set(frames):
            incl[key] += count
        for key in {f for f in frames if f[0].startswith(("shared/", "workers/"))}:
            ours_incl[key] += count
    pct = lambda c: 100.0 * c / total if total else 0.0  # noqa: E731
    out = [f"  {total} samples holding the GIL = {total / HZ / seconds:.0%} of the window, "
           f"~{total / HZ * 1000 / turns:.1f} ms of Python per turn; self time by module/library (leaf frame):"]
    out += [f"    {pct(c):5.1f}%  {k}" for k, c in libs.most_common(12)]
    out += ["  top self (leaf) functions:"]
    out += [f"    {pct(c):5.1f}%  {k[0]}:{k[1]}" for k, c in self_c.most_common(top)]
    out += ["  top inclusive functions of our code (shared/, workers/):"]
    out += [f"    {pct(c):5.1f}%  {k[0]}:{k[1]}" for k, c in ours_incl.most_common(top + 10)]
    out += ["  top inclusive functions of libraries:"]
    out += [f"    {pct(c):5.1f}%  {k[0]}:{k[1]}" for k, c in incl.most_common(200)
            if not k[0].startswith(PLUMBING)][:top]
    return out


def _pg_log(svc, on: bool) -> None:
    import psycopg

    with psycopg.connect(svc.pg_url, autocommit=True) as conn:
        if on:
            conn.execute("ALTER SYSTEM SET log_statement = 'all'")
            conn.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] db=%d '")
        else:
            conn.execute("ALTER SYSTEM RESET log_statement")
            conn.execute("ALTER SYSTEM RESET log_line_prefix")
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.3)


def statements(log_text: str, turns: int) -> list[str]:
    """Statements per turn in the bench tenants' databases, by kind (first word, or the SQL's table for DML)."""
    kinds = collections.Counter()
    pattern = r"db=bench_\w+ LOG:  (?:statement|execute [^:]*): (.*?)(?=\n\d{4}-\d\d-\d\d |\Z)"
    for m in re.finditer(pattern, log_text, re.S):
        sql = re.sub(r"\s+", " ", m.group(1).split("DETAIL:")[0]).strip()
        word = sql.split()[0].upper() if sql else "?"
        table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+([a-z_]+)", sql, re.I)
        kinds[f"{word} {table.group(1) if table and word != 'BEGIN' else ''}".strip()] += 1
    total = sum(kinds.values())
    out = [f"  {total / turns:.1f} statements (round trips) per turn:"]
    out += [f"    {c / turns:5.2f}  {k}" for k, c in kinds.most_common(40)]
    return out


def task_counts(data: Path, turns: int) -> str:
    """Tasks run per turn, by name, from the workers' logs (whole run: every phase)."""
    counts = collections.Counter()
    for name in ("inbound.log", "outbound.log"):
        text = (data / name).read_text(errors="replace") if (data / name).exists() else ""
        counts.update(re.findall(r"Task (wabot\.[\w.]+)\[[^\]]*\] received", text))
    return "tasks received by the workers (whole run, all phases): " + ", ".join(
        f"{k} {v}" for k, v in counts.most_common())


def profile(stack, svc, data: Path, seconds: float, run_project, fake) -> None:
    targets = {"inbound": stack.inbound.popen.pid, "outbound": stack.outbound.popen.pid,
               "web": _web_worker(stack.web.popen.pid)}
    pg_log = data / "pg" / "log"
    offset = pg_log.stat().st_size if pg_log.exists() else 0
    if "postgres" in svc.pids:
        _pg_log(svc, True)
    spies = {kind: subprocess.Popen([_pyspy(), "record", "-p", str(pid), "-r", str(HZ), "-d", str(int(seconds) + 4),
                                     "-f", "raw", "-o", str(data / f"{kind}.raw"), "--nonblocking", "--gil",
                                     "--full-filenames"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for kind, pid in targets.items()}
    time.sleep(1.0)
    result = run_project(stack, fake, f"profile mock @{RATE}/s", "mock", 0.0, rate=RATE, seconds=seconds)
    if "postgres" in svc.pids:
        _pg_log(svc, False)
    for spy in spies.values():
        spy.wait(60)
    turns = result.extra["answered"] or 1
    print(f"\nprofile: {turns} turns of the mock model at {RATE}/s, py-spy at 200 Hz")
    for kind in targets:
        raw = data / f"{kind}.raw"
        print(f"{kind} worker (pid {targets[kind]}):")
        missing = ["  (no py-spy output: is py-spy installed?)"]
        print("\n".join(analyse(raw, seconds + 4, turns) if raw.exists() else missing))
    print(task_counts(data, turns))
    if pg_log.exists():
        with open(pg_log, errors="replace") as fh:
            fh.seek(offset)
            print("postgres:\n" + "\n".join(statements(fh.read(), turns)))
