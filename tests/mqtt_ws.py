"""A paho-mqtt client over WebSocket that records what happens to it."""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.provisioner_cli import api_get

CONNECT_TIMEOUT = 15.0


class WsClient:
    """One MQTT-over-WebSocket session with events for connect and disconnect."""

    def __init__(self, node: Any, user: str, password: str, client_id: str) -> None:
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.refused = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            transport="websockets",
        )
        self.client.ws_set_options(path="/ws")
        self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.node = node

    def start(self) -> bool:
        """Connect and return True once the broker accepted the login."""
        self.client.connect_async("127.0.0.1", self.node.web_mqtt_port, keepalive=30)
        self.client.loop_start()
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while time.monotonic() < deadline:
            if self.connected.is_set():
                return True
            if self.refused.is_set() or self.disconnected.is_set():
                return False
            time.sleep(0.05)
        return False

    def publish(self, topic: str) -> bool:
        """Publish at QoS 1 and return True when the broker acknowledged it."""
        info = self.client.publish(topic, b"x", qos=1)
        try:
            info.wait_for_publish(timeout=5)
        except RuntimeError:
            return False
        return info.is_published()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused.set()
            # Stop paho's automatic reconnect, which would hide the refusal.
            client.disconnect()
        else:
            self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.disconnected.set()


def wait_for_connection(node: Any, user: str, timeout: float = 20.0) -> None:
    """Wait until the management API lists a connection of ``user``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = api_get(node, "connections?columns=name,user")
        if any(entry.get("user") == user for entry in listed):
            return
        time.sleep(0.5)
    raise AssertionError(f"no connection of {user!r} listed within {timeout} s")
