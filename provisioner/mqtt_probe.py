"""Try one MQTT publish or subscribe on a fresh WebSocket connection.

The broker responds to a refused publish or subscribe by closing the
connection, so each probe opens a connection of its own, does one action,
watches whether the connection survives, and disconnects. This module talks
MQTT 3.1.1 through paho-mqtt and nothing else: choosing what to probe and
what to expect belongs to ``verify``. Importing it needs paho-mqtt, the
``mqtt`` extra of the package.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

# How long a connection must stay open after the broker acknowledged an
# action. A refusal closes the connection while the broker handles the
# packet, before any acknowledgement, so this only guards against a broker
# that acknowledges first and closes right after.
SETTLE_SECONDS = 0.3

_LOOP_STEP_SECONDS = 0.02
_CLOSE_SECONDS = 0.5
_PAYLOAD = b"provisioner verify probe"


class Outcome(StrEnum):
    """Outcome of a probe's action on the broker."""

    ALLOWED = "allowed"
    REFUSED = "refused"
    CONNECT_FAILED = "connect failed"


@dataclass(frozen=True)
class Result:
    """The outcome of one probe and the observation behind it."""

    outcome: Outcome
    detail: str


class BrokerUnreachable(Exception):
    """The TCP, TLS or WebSocket connection to the broker could not be opened."""


@dataclass(frozen=True)
class Endpoint:
    """Address and options for MQTT-over-WebSocket connections."""

    host: str
    port: int
    path: str
    tls: bool
    ca_bundle: Path | None
    timeout: float

    @classmethod
    def from_url(cls, url: str, *, ca_bundle: Path | None, timeout: float) -> Endpoint:
        """Build an endpoint from a ``ws://`` or ``wss://`` URL."""
        parts = urlsplit(url)
        tls = parts.scheme == "wss"
        port = parts.port or (443 if tls else 80)
        return cls(
            host=parts.hostname or "",
            port=port,
            path=parts.path or "/",
            tls=tls,
            ca_bundle=ca_bundle,
            timeout=timeout,
        )


@dataclass(frozen=True)
class Login:
    """The MQTT credentials and client id of one probe."""

    username: str
    password: str = field(repr=False)
    client_id: str


def probe_connect(endpoint: Endpoint, login: Login) -> Result:
    """Connect and disconnect; returns ALLOWED when CONNACK reported success."""
    with _Connection(endpoint, login) as connection:
        failed = connection.open()
        if failed is not None:
            return failed
        return Result(Outcome.ALLOWED, "CONNACK success")


def probe_publish(endpoint: Endpoint, login: Login, topic: str) -> Result:
    """Publish one QoS 1 message to ``topic``.

    Returns ALLOWED when the broker sent PUBACK and kept the connection open.
    """
    with _Connection(endpoint, login) as connection:
        failed = connection.open()
        if failed is not None:
            return failed
        info = connection.client.publish(topic, _PAYLOAD, qos=1)
        acknowledged = connection.wait_for(lambda: info.mid in connection.pubacks)
        return connection.judge(acknowledged, "PUBACK")


def probe_subscribe(
    endpoint: Endpoint, login: Login, topic_filter: str, qos: int
) -> Result:
    """Subscribe to ``topic_filter`` at ``qos``.

    Returns ALLOWED when SUBACK granted a QoS (not 0x80) and the connection
    stayed open.
    """
    with _Connection(endpoint, login) as connection:
        failed = connection.open()
        if failed is not None:
            return failed
        _, mid = connection.client.subscribe(topic_filter, qos=qos)
        if mid is None:
            # paho returns no message id when the connection is already lost.
            return connection.judge(False, "SUBACK")
        acknowledged = connection.wait_for(lambda: mid in connection.subacks)
        if acknowledged:
            codes = connection.subacks[mid]
            if any(code >= 0x80 for code in codes):
                return Result(Outcome.REFUSED, "SUBACK 0x80 (failure)")
        granted = connection.subacks.get(mid, [qos])
        return connection.judge(acknowledged, "SUBACK", f"SUBACK QoS {granted[0]}")


class _Connection:
    """One paho client driven step by step, without a network thread."""

    def __init__(self, endpoint: Endpoint, login: Login) -> None:
        self.endpoint = endpoint
        self.login = login
        self.client = _make_client(endpoint, login)
        self.connack: Any = None
        self.disconnected = False
        self.pubacks: set[int] = set()
        self.subacks: dict[int, list[int]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # disconnect() sends DISCONNECT when connected; the following loop
        # steps write it and close the socket.
        self.client.disconnect()
        deadline = time.monotonic() + _CLOSE_SECONDS
        while not self.disconnected and time.monotonic() < deadline:
            self.client.loop(timeout=_LOOP_STEP_SECONDS)

    def open(self) -> Result | None:
        """Connect and wait for CONNACK; return a Result only on failure.

        Raises BrokerUnreachable when no connection can be opened at all.
        """
        endpoint = self.endpoint
        try:
            self.client.connect(endpoint.host, endpoint.port, keepalive=60)
        except (OSError, paho.WebsocketConnectionError) as error:
            raise BrokerUnreachable(
                f"cannot open {_describe(endpoint)}: {error}"
            ) from error
        if not self.wait_for(lambda: self.connack is not None):
            return Result(Outcome.CONNECT_FAILED, _closed_or_timed_out(self, "CONNACK"))
        if self.connack.is_failure:
            return Result(Outcome.CONNECT_FAILED, f"CONNACK {self.connack}")
        return None

    def wait_for(self, condition: Callable[[], bool]) -> bool:
        """Run the network loop until ``condition`` holds, the connection
        closes or the probe times out; return whether ``condition`` held."""
        deadline = time.monotonic() + self.endpoint.timeout
        while not condition():
            if self.disconnected or time.monotonic() > deadline:
                return False
            self.client.loop(timeout=_LOOP_STEP_SECONDS)
        return True

    def judge(
        self, acknowledged: bool, ack_name: str, ack_detail: str | None = None
    ) -> Result:
        """Turn an acknowledgement and the connection's fate into a Result.

        ``ack_detail`` describes a received acknowledgement (default: its name).
        """
        detail = ack_detail or ack_name
        if not acknowledged:
            return Result(Outcome.REFUSED, _closed_or_timed_out(self, ack_name))
        settle_until = time.monotonic() + min(SETTLE_SECONDS, self.endpoint.timeout)
        while time.monotonic() < settle_until and not self.disconnected:
            self.client.loop(timeout=_LOOP_STEP_SECONDS)
        if self.disconnected:
            return Result(Outcome.REFUSED, f"{detail}, then connection closed")
        return Result(Outcome.ALLOWED, detail)

    def _on_connect(self, *args: Any) -> None:
        # VERSION2 signature: client, userdata, flags, reason_code, properties.
        self.connack = args[3]

    def _on_disconnect(self, *args: Any) -> None:
        self.disconnected = True

    def _on_publish(self, client: Any, userdata: Any, mid: int, *rest: Any) -> None:
        self.pubacks.add(mid)

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: int, reason_codes: Any, *rest: Any
    ) -> None:
        self.subacks[mid] = [int(code.value) for code in reason_codes]


def _make_client(endpoint: Endpoint, login: Login) -> paho.Client:
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=login.client_id,
        clean_session=True,
        protocol=paho.MQTTv311,
        transport="websockets",
    )
    client.connect_timeout = endpoint.timeout
    client.ws_set_options(path=endpoint.path)
    if endpoint.tls:
        # Verification and host name checks stay on; only the CA is chosen.
        ca_certs = str(endpoint.ca_bundle) if endpoint.ca_bundle else None
        client.tls_set(ca_certs=ca_certs, cert_reqs=ssl.CERT_REQUIRED)
    client.username_pw_set(login.username, login.password)
    return client


def _closed_or_timed_out(connection: _Connection, ack_name: str) -> str:
    if connection.disconnected:
        return f"connection closed, no {ack_name}"
    return f"no {ack_name} within {connection.endpoint.timeout:g} s"


def _describe(endpoint: Endpoint) -> str:
    scheme = "wss" if endpoint.tls else "ws"
    return f"{scheme}://{endpoint.host}:{endpoint.port}{endpoint.path}"
