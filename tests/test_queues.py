"""Every task names its queue, and the queues are the four workloads."""
import celeryconfig
from shared.queueing.tasks import QUEUES, TASK_QUEUES


def test_every_task_has_a_queue(stack_env, monkeypatch):
    for key in ("REDIS_URL", "WEBHOOK_VERIFY_TOKEN", "TENANTS_FILE", "LLM_PROVIDER"):
        monkeypatch.setenv(key, stack_env[key])
    from workers import app

    app.loader.import_default_modules()
    ours = {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}
    assert set(ours) == set(TASK_QUEUES), "a task was added without a queue in shared.queueing.tasks"
    for name, task in ours.items():
        assert task.queue in QUEUES, f"{name} names no queue"
        assert task.queue == TASK_QUEUES[name]
        assert app.amqp.router.route({}, name)["queue"].name == task.queue


def test_queues_and_delivery_settings():
    assert {q.name for q in celeryconfig.task_queues} == set(QUEUES)
    assert celeryconfig.task_acks_late and celeryconfig.worker_prefetch_multiplier == 1
    assert celeryconfig.broker_transport_options["visibility_timeout"] > celeryconfig.task_time_limit
