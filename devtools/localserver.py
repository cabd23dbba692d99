"""A WSGI app served on a local port from a background thread: the Infobip sandbox and the tests' fake servers."""
from __future__ import annotations

import threading
from typing import Callable

from werkzeug.serving import WSGIRequestHandler, make_server


class LocalServer:
    """Subclasses implement `_wsgi(environ, start_response)`; `url` is known before `start()`."""

    thread_name = "local-server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 request_handler: type[WSGIRequestHandler] | None = None):
        kwargs = {"request_handler": request_handler} if request_handler else {}
        self._server = make_server(host, port, self._wsgi, threaded=True, **kwargs)
        self._server.block_on_close = False  # stop() must not wait for a handler that is still sleeping
        self.host, self.port = host, self._server.server_port
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    _wsgi: Callable  # provided by the subclass

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving (idempotent): later requests get connection refused."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.server_close()
