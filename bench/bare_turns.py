"""The bare baseline of bench_turns.py: a Celery task on the same Redis that waits the model time and POSTs one
text send to the Infobip sandbox, on a thread pool of the same size. No web hop, no database, no outbox.

As a Celery app (`celery -A bench.bare_turns worker -Q bare -P threads -c N`, REDIS_URL and SANDBOX_URL set) it
serves the task; `run_bare(...)` (used by bench_turns.py) drives it. Run alone it prints the same metrics:

    .venv/bin/python bench/bare_turns.py [--threads 20] [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parent))
import turnstack as ts  # noqa: E402

TASK = "bare.turn"
app = Celery("bare", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
# The delivery settings wabot uses (shared/queueing/celery_config.py), without task events.
app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True, task_acks_late=True,
                worker_prefetch_multiplier=1, task_default_queue="bare", broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False)
_local = threading.local()


@app.task(name=TASK)
def bare_turn(to: str, delay: float) -> None:
    import requests

    if delay:
        time.sleep(delay)
    session = getattr(_local, "session", None) or requests.Session()
    _local.session = session
    session.post(os.environ["SANDBOX_URL"] + ts.SEND_PATH, timeout=10,
                 json={"from": "447100000009", "to": to, "content": {"text": "Happy to help! We are open 9-17."}},
                 headers={"Authorization": f"App {ts.INFOBIP_KEY}"}).raise_for_status()


class BareStack:
    """The bare worker (one process, thread pool) next to a running Redis and sandbox."""

    def __init__(self, redis_url: str, recorder: ts.Recorder, threads: int, log_dir: Path, redis_pid: int | None):
        env = {**os.environ, "REDIS_URL": redis_url, "SANDBOX_URL": recorder.url, "PYTHONUNBUFFERED": "1"}
        self.recorder, self.threads = recorder, threads
        self.worker = ts.start_celery("bare", "bench.bare_turns", "bare", threads, env, log_dir)
        self.client = Celery("bare-client", broker=redis_url)
        self.client.conf.update(task_serializer="json", task_ignore_result=True)
        self.roots = {"bare-worker": self.worker.popen.pid}
        if redis_pid:
            self.roots["redis"] = redis_pid

    def send(self, delay: float):
        return lambda user: self.client.send_task(TASK, args=[user, delay], queue="bare")

    def stop(self) -> None:
        self.worker.stop()


def run_bare(stack: BareStack, name: str, delay: float, *, rate: float | None = None, seconds: float,
             warmup: float = 3.0, window: int | None = None) -> ts.PhaseResult:
    """One phase: open loop at `rate` (latency) or closed loop with `window` in flight (throughput)."""
    return ts.run_phase(name, stack.roots, stack.recorder, stack.send(delay), rate=rate, seconds=seconds,
                        warmup=warmup, window=window)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    secs = 6 if args.quick else 15
    with tempfile.TemporaryDirectory(prefix="bare_turns_") as tmp:
        svc = ts.start_services(Path(tmp))
        recorder = ts.Recorder(api_key=ts.INFOBIP_KEY).start()
        stack = BareStack(svc.redis_url, recorder, args.threads, Path(tmp), svc.pids.get("redis"))
        try:
            for result in (run_bare(stack, "bare 0 s @20/s", 0.0, rate=20, seconds=secs),
                           run_bare(stack, "bare 0 s closed", 0.0, seconds=secs, window=2 * args.threads),
                           run_bare(stack, "bare 1 s closed", 1.0, seconds=secs, window=2 * args.threads)):
                print(ts.format_result(result), flush=True)
        finally:
            stack.stop()
            recorder.stop()
            svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
