"""gunicorn entry point: `gunicorn -c ingress/gunicorn.conf.py ingress.wsgi:app`."""
import sys

from shared.errors import ConfigError

try:
    from ingress.app import create_app

    app = create_app()
except ConfigError as exc:  # one readable line instead of a traceback
    print(f"configuration error: {exc}", file=sys.stderr)
    sys.exit(2)
