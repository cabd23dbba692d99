"""Every task names its queue, and the queues are the four workloads; importing the workers reads no environment."""
import subprocess
import sys

from devtools.devstack import ROOT
from shared.config.settings import load_settings
from shared.queueing.celery_config import TASK_TIME_LIMIT, celery_config
from shared.queueing.tasks import QUEUES, TASK_QUEUES


def test_every_task_has_a_queue(settings):
    from workers import app

    app.config_from_object(celery_config(settings), force=True)  # what a worker reads from its environment
    app.loader.import_default_modules()
    ours = {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}
    assert set(ours) == set(TASK_QUEUES), "a task was added without a queue in shared.queueing.tasks"
    for name, task in ours.items():
        assert task.queue in QUEUES, f"{name} names no queue"
        assert task.queue == TASK_QUEUES[name]
        assert app.amqp.router.route({}, name)["queue"].name == task.queue


def test_importing_the_workers_needs_no_environment(tmp_path):
    """The Celery app is configured when Celery first reads its configuration (a worker starting), not at import."""
    code = "import workers, workers.inbound, workers.outbound, workers.events, workers.scheduled"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr


def test_queues_and_delivery_settings():
    config = celery_config(load_settings({"REDIS_URL": "redis://127.0.0.1:1/0", "WEBHOOK_VERIFY_TOKEN": "t"},
                                         dotenv=False))
    assert {q.name for q in config["task_queues"]} == set(QUEUES)
    assert config["task_acks_late"] and config["worker_prefetch_multiplier"] == 1
    assert config["broker_transport_options"]["visibility_timeout"] > TASK_TIME_LIMIT
    assert config["broker_url"].startswith("redis")
