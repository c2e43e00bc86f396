"""An HTTP proxy on loopback that injects faults between the CLI and a broker.

Tests put a `FaultProxy` in front of a throwaway node's management port and
switch its behaviour while the real CLI runs: pass requests through, refuse
connections, delay, cut a response part way, return canned 5xx or 4xx
statuses, or hang without responding. The proxy speaks HTTP/1.1 so that rules
can target one method and path prefix and count requests. It can also
terminate TLS, to serve the management API over https.

A request the proxy cannot forward, because the node is down, closes the
client connection without an answer, as a stopped broker's port would.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)

# Hop-by-hop and framing headers the proxy sets itself.
_DROPPED_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length"}
)
UPSTREAM_TIMEOUT_SECONDS = 60.0


class Fault(Enum):
    """What the proxy does with a request that a rule matches."""

    DELAY = "delay"
    CUT = "cut"
    STATUS = "status"
    HANG = "hang"


@dataclass
class Rule:
    """One fault for the next ``count`` matching requests (None: every request)."""

    fault: Fault
    count: int | None = None
    method: str | None = None
    path_prefix: str | None = None
    delay: float = 0.0
    status: int = 503
    cut_bytes: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # Returning False makes socketserver close the connection at once,
        # which the client sees as a reset or a closed connection.
        return not self.proxy.refusing

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Failed TLS handshakes and clients that hang up are expected here.
        logger.debug("proxy: connection from %s failed", client_address, exc_info=True)


class FaultProxy:
    """Threaded proxy from a free loopback port to ``upstream_port``."""

    def __init__(
        self, upstream_port: int, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self.upstream_port = upstream_port
        self.refusing = False
        self.requests: Counter[tuple[str, str]] = Counter()
        self.faults_served: Counter[Fault] = Counter()
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        if tls is not None:
            # The handshake runs on first read, in the handler thread, so a
            # failing client never blocks the accept loop.
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port: int = self._server.server_address[1]
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name=f"fault-proxy-{self.port}",
            daemon=True,
        )

    @property
    def url(self) -> str:
        """Base URL of the proxy, to use as PROVISIONER_MANAGEMENT_URL."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, release hung handlers and close the listening socket."""
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Switching behaviour

    def pass_through(self) -> None:
        """Forward every request unchanged and accept every connection."""
        with self._lock:
            self._rules.clear()
            self.refusing = False

    def refuse(self) -> None:
        """Close new connections at accept and open ones at their next request."""
        self.refusing = True

    def add(self, rule: Rule) -> None:
        """Apply ``rule`` before earlier rules to the requests it matches."""
        with self._lock:
            self._rules.insert(0, rule)

    def remove(self, rule: Rule) -> None:
        """Stop applying ``rule``."""
        with self._lock:
            self._rules = [r for r in self._rules if r is not rule]

    def count(self, method: str, path_prefix: str = "") -> int:
        """Return how many requests with ``method`` and ``path_prefix`` arrived."""
        with self._lock:
            return sum(
                n
                for (m, p), n in self.requests.items()
                if m == method and p.startswith(path_prefix)
            )

    def take_rule(self, method: str, path: str) -> Rule | None:
        """Record a request and return the rule it triggers, counting it down."""
        with self._lock:
            self.requests[(method, path)] += 1
            for rule in self._rules:
                if rule.matches(method, path):
                    if rule.count is not None:
                        rule.count -= 1
                    self.faults_served[rule.fault] += 1
                    return rule
        return None

    def wait_stopped(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True when the proxy is stopping."""
        return self._stopped.wait(seconds)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("proxy: " + format, *args)

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        proxy = self.server.proxy
        if proxy.refusing:
            # A kept-alive connection outlives refuse(); drop it unanswered.
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        rule = proxy.take_rule(self.command, self.path.split("?", 1)[0])

        if rule is not None and rule.fault is Fault.HANG:
            proxy.wait_stopped(3600)
            self.close_connection = True
            return
        if rule is not None and rule.fault is Fault.STATUS:
            self._send_canned(rule.status)
            return
        if (
            rule is not None
            and rule.fault is Fault.DELAY
            and proxy.wait_stopped(rule.delay)
        ):
            self.close_connection = True
            return

        upstream = self._forward(body)
        if upstream is None:
            # The node is down: close without a response, as its port would.
            self.close_connection = True
            return
        status, headers, payload = upstream
        if rule is not None and rule.fault is Fault.CUT:
            self._send(status, headers, payload, cut=rule.cut_bytes)
            self.close_connection = True
            return
        self._send(status, headers, payload)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes] | None:
        connection = http.client.HTTPConnection(
            "127.0.0.1",
            self.server.proxy.upstream_port,
            timeout=UPSTREAM_TIMEOUT_SECONDS,
        )
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in _DROPPED_HEADERS
        }
        try:
            connection.request(
                self.command, self.path, body=body or None, headers=headers
            )
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            logger.debug("proxy: upstream failed: %s", error)
            return None
        finally:
            connection.close()
        kept = [
            (k, v)
            for k, v in response.getheaders()
            if k.lower() not in _DROPPED_HEADERS
        ]
        return response.status, kept, payload

    def _send_canned(self, status: int) -> None:
        reason = http.client.responses.get(status, "Error")
        payload = (
            f'{{"error":"{reason}","reason":"injected by the test proxy"}}'.encode()
        )
        self._send(status, [("Content-Type", "application/json")], payload)

    def _send(
        self,
        status: int,
        headers: list[tuple[str, str]],
        payload: bytes,
        *,
        cut: int | None = None,
    ) -> None:
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload if cut is None else payload[:cut])
        self.wfile.flush()
        if cut is not None:
            # Closing hard right after the partial body is what a crashing
            # broker does; a graceful shutdown would look the same to HTTP.
            self.connection.shutdown(socket.SHUT_RDWR)


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
