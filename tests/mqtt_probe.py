"""Log in over MQTT-over-WebSocket and send one QoS 1 message to itself.

The tests use this to prove that a provisioned account works for a real
MQTT client (paho-mqtt 2.x), not only that the management API lists it.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

WEB_MQTT_PATH = "/ws"
STEP_TIMEOUT_SECONDS = 10.0


class MqttProbeError(AssertionError):
    """A step of the round trip failed or timed out."""


@dataclass
class _Events:
    connected: threading.Event = field(default_factory=threading.Event)
    subscribed: threading.Event = field(default_factory=threading.Event)
    received: threading.Event = field(default_factory=threading.Event)
    connect_reason: Any = None
    granted: list[Any] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)


@dataclass
class RoundTrip:
    """What the broker returned during one round trip."""

    payload: bytes
    qos: int
    topic: str


def _client(client_id: str, username: str, password: str, events: _Events) -> Any:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        transport="websockets",
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    client.ws_set_options(path=WEB_MQTT_PATH)
    client.username_pw_set(username, password)

    def on_connect(
        _client: Any, _data: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        events.connect_reason = reason
        events.connected.set()

    def on_subscribe(
        _client: Any, _data: Any, _mid: Any, reasons: Any, _props: Any
    ) -> None:
        events.granted = list(reasons)
        events.subscribed.set()

    def on_message(_client: Any, _data: Any, message: Any) -> None:
        events.messages.append(message)
        events.received.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    return client


def _wait(event: threading.Event, step: str) -> None:
    if not event.wait(STEP_TIMEOUT_SECONDS):
        raise MqttProbeError(f"MQTT {step} timed out after {STEP_TIMEOUT_SECONDS} s")


def qos1_round_trip(
    port: int, client_id: str, username: str, password: str, topic: str
) -> RoundTrip:
    """Subscribe to `topic` at QoS 1, publish to it and return what arrived.

    Raises MqttProbeError when the login, the subscription or the delivery
    fails, including when the broker closes the connection on a denied step.
    """
    events = _Events()
    client = _client(client_id, username, password, events)
    payload = secrets.token_bytes(16)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        _wait(events.connected, "login")
        if events.connect_reason is None or events.connect_reason.is_failure:
            raise MqttProbeError(f"MQTT login failed: {events.connect_reason}")

        client.subscribe(topic, qos=1)
        _wait(events.subscribed, "subscribe")
        if any(reason.is_failure for reason in events.granted):
            raise MqttProbeError(f"MQTT subscribe rejected: {events.granted}")

        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(STEP_TIMEOUT_SECONDS)
        _wait(events.received, "delivery")
    finally:
        client.disconnect()
        client.loop_stop()
    message = events.messages[0]
    if message.payload != payload:
        raise MqttProbeError("MQTT delivered a different payload than was published")
    return RoundTrip(bytes(message.payload), int(message.qos), str(message.topic))
