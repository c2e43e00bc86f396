"""A loopback HTTP proxy in front of a test node that breaks one import.

It forwards every request to the node unchanged, except the N-th and every
later ``POST /api/definitions``: of those it forwards only the first half of
the users (with their grants) and then returns 400, as a broker does when
it rejects an object part way through an import it has partly applied.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

HOP_HEADERS = {"host", "content-length", "connection", "accept-encoding"}


def _first_half(document: dict[str, Any]) -> dict[str, Any]:
    users = document.get("users", [])
    kept = users[: len(users) // 2]
    names = {user["name"] for user in kept}
    return {
        **document,
        "users": kept,
        "permissions": [
            p for p in document.get("permissions", []) if p["user"] in names
        ],
        "topic_permissions": [
            p for p in document.get("topic_permissions", []) if p["user"] in names
        ],
    }


class _Handler(BaseHTTPRequestHandler):
    server: _ProxyServer

    def do_GET(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        failing = (
            self.command == "POST"
            and self.path == "/api/definitions"
            and (self.server.count_import())
        )
        if failing:
            body = json.dumps(_first_half(json.loads(body))).encode()
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS
        }
        response = requests.request(
            self.command,
            self.server.target + self.path,
            data=body,
            headers=headers,
            timeout=120,
        )
        if failing:
            self._reply(400, b'{"error":"bad_request","reason":"injected failure"}')
        else:
            self._reply(response.status_code, response.content)

    def _reply(self, status: int, content: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)


class _ProxyServer(ThreadingHTTPServer):
    def __init__(self, target: str, fail_import: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.target = target
        self.fail_import = fail_import
        self.imports = 0
        self._lock = threading.Lock()

    def count_import(self) -> bool:
        """Count one definitions import; return whether it is one to break."""
        with self._lock:
            self.imports += 1
            return self.imports >= self.fail_import


@contextmanager
def failing_proxy(target: str, fail_import: int) -> Iterator[str]:
    """Run the proxy in a thread; yield its base URL."""
    server = _ProxyServer(target, fail_import)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()
