"""A local stand-in for a tenant's third-party API (the target of HTTP tools), on 127.0.0.1 only.

Endpoints:
- GET  /v1/current?city=...   weather: {"city", "temperature_c": 22, "conditions": "partly cloudy"}
- POST /v1/bookings           echoes the JSON body it got: {"received": {...}}
- GET  /v1/echo-headers       answers with the request headers (a careless API that echoes the key)
- GET  /v1/moved?city=...     302 to /v1/current on this server (same host)
- GET  /v1/loop               302 to itself, forever
- GET  /v1/away               302 to `redirect_target` (another host/port)
- GET  /v1/huge               an endless chunked body (no Content-Length)
- GET  /v1/slow?seconds=N     waits N seconds (default 5) before answering
- GET  /v1/broken             500 with a JSON error body
- GET  /v1/page               a text/plain body
Every request is recorded (method, path, query, headers, body) and readable with `requests_seen()`.
"""
from __future__ import annotations

import json
import threading
import time

from werkzeug.wrappers import Request, Response

from devtools.localserver import LocalServer


class FakeHttpApi(LocalServer):
    thread_name = "fake-http-api"

    def __init__(self, host: str = "127.0.0.1", redirect_target: str = "http://127.0.0.1:9/"):
        self.redirect_target = redirect_target
        self._lock = threading.Lock()
        self._seen: list[dict] = []
        super().__init__(host, 0)
        self.url = self.base_url

    def requests_seen(self, path: str | None = None) -> list[dict]:
        with self._lock:
            return [r for r in self._seen if path is None or r["path"] == path]

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        body = request.get_data(as_text=True)
        with self._lock:
            self._seen.append({"method": request.method, "path": request.path,
                               "query": request.args.to_dict(flat=False), "headers": dict(request.headers),
                               "body": body})
        return self._route(request, body)(environ, start_response)

    def _route(self, request: Request, body: str) -> Response:
        path = request.path
        if path == "/v1/current":
            return _json({"city": request.args.get("city"), "temperature_c": 22, "conditions": "partly cloudy"})
        if path == "/v1/bookings" and request.method == "POST":
            return _json({"received": json.loads(body or "null")})
        if path == "/v1/echo-headers":
            return _json({"headers": dict(request.headers)})
        if path == "/v1/moved":
            return Response(status=302, headers={"Location": f"/v1/current?{request.query_string.decode()}"})
        if path == "/v1/loop":
            return Response(status=302, headers={"Location": "/v1/loop"})
        if path == "/v1/away":
            return Response(status=302, headers={"Location": self.redirect_target})
        if path == "/v1/huge":
            def endless():
                chunk = b"x" * 65536
                for _ in range(100_000):
                    yield chunk
            return Response(endless(), mimetype="application/octet-stream")
        if path == "/v1/slow":
            time.sleep(float(request.args.get("seconds", "5")))
            return _json({"slow": True})
        if path == "/v1/broken":
            return _json({"error": "database on fire"}, status=500)
        if path == "/v1/page":
            return Response("hello from a plain page", mimetype="text/plain")
        return _json({"error": "not found"}, status=404)


def _json(doc: dict, status: int = 200) -> Response:
    return Response(json.dumps(doc), status=status, mimetype="application/json")
