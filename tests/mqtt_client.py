"""A small paho-mqtt 2.x client for the broker tests: MQTT 3.1.1 over WebSocket.

Each method waits for the broker's reply and returns what happened, so a
test reads as a sequence of steps. The tests check broker behaviour with it
and do not use the provisioner's own probe code, so a bug there cannot hide
a bug in the grants.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

WAIT_SECONDS = 5.0
# A refused action closes the connection while the broker handles it, so
# an open connection this long after the acknowledgement means "allowed".
SETTLE_SECONDS = 0.3


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass
class TestClient:
    """One paho client with its network thread and what it received."""

    __test__ = False  # not a test class, despite the name

    client: paho.Client
    connack: Any = None
    session_present: bool | None = None
    closed: threading.Event = field(default_factory=threading.Event)
    connected: threading.Event = field(default_factory=threading.Event)
    messages: list[Message] = field(default_factory=list)
    subacks: dict[int, list[int]] = field(default_factory=dict)
    pubacks: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def subscribe(self, topic_filter: str, qos: int = 1) -> str:
        """Subscribe; return "granted N", "failure 0x80", "closed" or "no reply"."""
        _, mid = self.client.subscribe(topic_filter, qos=qos)
        if mid is None:
            return "closed"
        if not _wait(lambda: mid in self.subacks or self.closed.is_set()):
            return "no reply"
        if mid not in self.subacks:
            return "closed"
        code = self.subacks[mid][0]
        if code >= 0x80:
            return "failure 0x80"
        return f"granted {code}" if self.stays_open() else "closed"

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> str:
        """Publish; return "ok" (PUBACK for QoS 1), "closed" or "no reply"."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos > 0 and not _wait(
            lambda: info.mid in self.pubacks or self.closed.is_set()
        ):
            return "no reply"
        if qos > 0 and info.mid not in self.pubacks:
            return "closed"
        return "ok" if self.stays_open() else "closed"

    def stays_open(self) -> bool:
        return not self.closed.wait(SETTLE_SECONDS)

    def wait_messages(self, count: int, seconds: float = WAIT_SECONDS) -> list[Message]:
        _wait(lambda: len(self.messages) >= count, seconds)
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        if not self.closed.is_set():
            self.client.disconnect()
            self.closed.wait(WAIT_SECONDS)
        self.client.loop_stop()


def connect(
    port: int,
    username: str,
    password: str,
    client_id: str,
    *,
    clean_session: bool = True,
) -> TestClient:
    """Connect to ws://127.0.0.1:PORT/ws and wait for CONNACK or a close."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=paho.MQTTv311,
        transport="websockets",
    )
    client.ws_set_options(path="/ws")
    client.username_pw_set(username, password)
    test_client = TestClient(client)
    _install_callbacks(test_client)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    _wait(lambda: test_client.connected.is_set() or test_client.closed.is_set())
    return test_client


def _install_callbacks(test_client: TestClient) -> None:
    def on_connect(client, userdata, flags, reason_code, properties):
        test_client.connack = reason_code
        test_client.session_present = bool(flags.session_present)
        test_client.connected.set()

    def on_disconnect(client, userdata, flags, reason_code, properties):
        test_client.closed.set()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        test_client.subacks[mid] = [int(code.value) for code in reason_codes]

    def on_publish(client, userdata, mid, reason_code, properties):
        test_client.pubacks.add(mid)

    def on_message(client, userdata, message):
        with test_client.lock:
            test_client.messages.append(
                Message(message.topic, message.payload, message.qos, message.retain)
            )

    client = test_client.client
    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.on_message = on_message


def _wait(condition: Any, seconds: float = WAIT_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
