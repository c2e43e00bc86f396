"""End-to-end: users from an mqtt block, provisioned by the real CLI, used over MQTT.

Every test runs ``provisioner sync`` against a throwaway node and then
connects with paho-mqtt 2.x (MQTT 3.1.1 over WebSocket, path ``/ws``) as a
device would. Set PROVISIONER_TEST_RABBITMQ_ROOT to run against RabbitMQ 4.0.
"""

from __future__ import annotations

import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from requests.auth import HTTPBasicAuth

from tests.mqtt_client import TestClient, connect
from tests.provisioner_cli import admin_session, api_get, run_cli
from tests.rabbitmq_node import RabbitNode

ROOM_PASSWORD = "room-client-e2e-pw"
SENSOR_PASSWORD = "sensor-a-e2e-pw"
PLANT_PASSWORD = "plant-e2e-pw"

USERS_FILE = """\
vhosts:
  - name: /
users:
  - name: room-client
    password: ${ROOM_CLIENT_PASSWORD}
    mqtt:
      publish: [/priv/room/sample]
      subscribe: [/priv/room/#]
  - name: sensor-a
    password: ${SENSOR_A_PASSWORD}
    mqtt:
      client_ids: [sensor-a-*]
      publish: [sensors/sensor-a/#]
      subscribe: [sensors/+/temp]
"""

ENV = {
    "ROOM_CLIENT_PASSWORD": ROOM_PASSWORD,
    "SENSOR_A_PASSWORD": SENSOR_PASSWORD,
    "PLANT_PASSWORD": PLANT_PASSWORD,
}


@pytest.fixture
def provisioned(clean_broker, tmp_path):
    """The clean node with USERS_FILE synced by the CLI."""
    path = write(tmp_path, USERS_FILE)
    result = run_cli(clean_broker, "sync", users_file=path, env=ENV)
    assert result.returncode == 0, result.stderr
    return clean_broker


@pytest.fixture
def clients() -> Iterator[list[TestClient]]:
    """Collect clients opened by a test and close them afterwards."""
    opened: list[TestClient] = []
    yield opened
    for client in opened:
        client.close()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "users.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def open_client(
    node: RabbitNode,
    clients: list[TestClient],
    user: str,
    password: str,
    client_id: str,
    clean_session: bool = True,
) -> TestClient:
    client = connect(
        node.web_mqtt_port, user, password, client_id, clean_session=clean_session
    )
    clients.append(client)
    assert client.connack is not None, f"no CONNACK for {user} as {client_id}"
    assert not client.connack.is_failure, f"CONNACK {client.connack}"
    return client


def room(
    node: RabbitNode,
    clients: list[TestClient],
    client_id: str = "room-client",
    clean_session: bool = True,
) -> TestClient:
    return open_client(
        node, clients, "room-client", ROOM_PASSWORD, client_id, clean_session
    )


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# Allowed actions


@pytest.mark.parametrize("qos", [0, 1])
def test_publish_subscribe_at_qos(provisioned, clients, qos):
    subscriber = room(provisioned, clients, unique_id("room-client"))
    assert subscriber.subscribe("/priv/room/#", qos=qos) == f"granted {qos}"
    publisher = room(provisioned, clients)

    assert publisher.publish("/priv/room/sample", b"hello", qos=qos) == "ok"

    messages = subscriber.wait_messages(1)
    assert [m.payload for m in messages] == [b"hello"]
    assert messages[0].qos == qos


def test_leading_slash_topic_kept(provisioned, clients):
    subscriber = room(provisioned, clients, unique_id("room-client"))
    assert subscriber.subscribe("/priv/room/sample") == "granted 1"
    publisher = room(provisioned, clients)

    assert publisher.publish("/priv/room/sample", b"slash") == "ok"

    messages = subscriber.wait_messages(1)
    assert [m.topic for m in messages] == ["/priv/room/sample"]


def test_persistent_session_gets_queued(provisioned, clients):
    client_id = unique_id("room-client")
    subscriber = room(provisioned, clients, client_id, clean_session=False)
    assert subscriber.subscribe("/priv/room/#", qos=1) == "granted 1"
    subscriber.close()

    publisher = room(provisioned, clients)
    assert publisher.publish("/priv/room/sample", b"while away", qos=1) == "ok"

    again = room(provisioned, clients, client_id, clean_session=False)
    assert again.session_present is True
    messages = again.wait_messages(1)
    assert [m.payload for m in messages] == [b"while away"]


def test_clean_session_forgets_subscription(provisioned, clients):
    client_id = unique_id("room-client")
    subscriber = room(provisioned, clients, client_id, clean_session=True)
    assert subscriber.subscribe("/priv/room/#", qos=1) == "granted 1"
    subscriber.close()

    publisher = room(provisioned, clients)
    assert publisher.publish("/priv/room/sample", b"lost", qos=1) == "ok"

    again = room(provisioned, clients, client_id, clean_session=True)
    assert again.session_present is False
    assert again.wait_messages(1, seconds=1.0) == []


def test_retained_message_reaches_later(provisioned, clients):
    publisher = room(provisioned, clients)
    assert publisher.publish("/priv/room/sample", b"kept", retain=True) == "ok"

    subscriber = room(provisioned, clients, unique_id("room-client"))
    assert subscriber.subscribe("/priv/room/sample") == "granted 1"

    messages = subscriber.wait_messages(1)
    assert [m.payload for m in messages] == [b"kept"]
    assert messages[0].retain is True


def test_retained_message_wildcard_subscriber(provisioned, clients):
    # Measured: RabbitMQ 3.10.8 and 4.0.5 look retained messages up by the
    # exact topic, so a wildcard subscription gets none.
    publisher = room(provisioned, clients)
    assert publisher.publish("/priv/room/sample", b"kept", retain=True) == "ok"

    subscriber = room(provisioned, clients, unique_id("room-client"))
    assert subscriber.subscribe("/priv/room/+") == "granted 1"

    assert subscriber.wait_messages(1, seconds=1.0) == []


@pytest.mark.parametrize(
    "topic_filter", ["/priv/room/#", "/priv/room/+", "/priv/room/sample", "/priv/room"]
)
def test_narrower_filters_allowed(provisioned, clients, topic_filter):
    subscriber = room(provisioned, clients, unique_id("room-client"))
    assert subscriber.subscribe(topic_filter) == "granted 1"


def test_plus_grant_receives_matches(provisioned, clients):
    subscriber = open_client(
        provisioned, clients, "sensor-a", SENSOR_PASSWORD, "sensor-a-sub"
    )
    assert subscriber.subscribe("sensors/+/temp") == "granted 1"
    publisher = open_client(
        provisioned, clients, "sensor-a", SENSOR_PASSWORD, "sensor-a-pub"
    )

    assert publisher.publish("sensors/sensor-a/temp", b"21.5") == "ok"
    assert publisher.publish("sensors/sensor-a/humidity", b"40") == "ok"

    messages = subscriber.wait_messages(1)
    assert [m.topic for m in messages] == ["sensors/sensor-a/temp"]


def test_hash_grant_receives_subtree(provisioned, clients):
    subscriber = room(provisioned, clients, unique_id("room-client"))
    assert subscriber.subscribe("/priv/room/#") == "granted 1"
    # room-client may publish only /priv/room/sample, so the admin (no topic
    # permission, so every topic) publishes the deeper topic.
    admin = open_client(
        provisioned, clients, provisioned.admin_user, provisioned.admin_password, "adm"
    )

    assert admin.publish("/priv/room/a/b", b"deep") == "ok"
    assert admin.publish("/priv/other", b"outside") == "ok"

    messages = subscriber.wait_messages(1)
    assert [m.topic for m in messages] == ["/priv/room/a/b"]


# Refusals


@pytest.mark.parametrize(
    "topic",
    [
        "/priv/room/other",
        "/priv/room/sample/deeper",
        "/priv/room",
        "priv/room/sample",
        "/priv/kitchen/sample",
        "sensors/sensor-a/temp",
    ],
)
def test_publish_elsewhere_refused(provisioned, clients, topic):
    publisher = room(provisioned, clients)
    assert publisher.publish(topic, b"x") == "closed"


@pytest.mark.parametrize(
    "topic_filter",
    ["/priv/#", "#", "/priv/+/sample", "/+/room/#", "priv/room/#", "/priv/kitchen"],
)
def test_subscribe_wider_or_other_refused(provisioned, clients, topic_filter):
    subscriber = room(provisioned, clients, unique_id("room-client"))
    assert subscriber.subscribe(topic_filter) == "closed"


def test_plus_grant_refuses_hash(provisioned, clients):
    subscriber = open_client(
        provisioned, clients, "sensor-a", SENSOR_PASSWORD, "sensor-a-sub"
    )
    assert subscriber.subscribe("sensors/#") == "closed"


@pytest.mark.parametrize("client_id", ["intruder", "room-clientX", "sensor-a-1"])
@pytest.mark.parametrize("qos", [0, 1])
def test_other_client_id_refused(provisioned, clients, client_id, qos):
    # Connect succeeds with any client id; the subscription queue's name is
    # what carries the client id into the permission check.
    subscriber = room(provisioned, clients, client_id)
    assert subscriber.subscribe("/priv/room/#", qos=qos) == "closed"


def test_other_client_id_still_publishes(provisioned, clients):
    publisher = room(provisioned, clients, "intruder")
    assert publisher.publish("/priv/room/sample", b"x") == "ok"


def test_wrong_password_refused(provisioned, clients):
    client = connect(provisioned.web_mqtt_port, "room-client", "wrong", "room-client")
    clients.append(client)
    assert client.connack is None or client.connack.is_failure


def test_mqtt_user_gets_401_on_api(provisioned):
    response = requests.get(
        f"{provisioned.management_url}/api/whoami",
        auth=HTTPBasicAuth("room-client", ROOM_PASSWORD),
        timeout=10,
    )
    assert response.status_code == 401


# Subscription queues: hand-written grants without them fail at QoS 1


@pytest.mark.parametrize("qos", [0, 1])
def test_hand_written_grant_fails(clean_broker, clients, tmp_path, qos):
    path = write(
        tmp_path,
        """\
        users:
          - name: room-client
            password: ${ROOM_CLIENT_PASSWORD}
            permissions:
              - {vhost: /, configure: "^$", write: "^amq\\\\.topic$", read: "^amq\\\\.topic$"}
        """,
    )
    result = run_cli(clean_broker, "sync", users_file=path, env=ENV)
    assert result.returncode == 0, result.stderr
    assert api_get(clean_broker, "permissions/%2F/room-client")["configure"] == "^$"

    subscriber = room(clean_broker, clients, "room-client")
    assert subscriber.subscribe("/priv/room/#", qos=qos) == "closed"


def test_mqtt_block_works_qos1(provisioned, clients):
    subscriber = room(provisioned, clients, "room-client")
    assert subscriber.subscribe("/priv/room/#", qos=1) == "granted 1"
    publisher = room(provisioned, clients, "room-client-pub")
    assert publisher.publish("/priv/room/sample", b"c7", qos=1) == "ok"
    assert [m.payload for m in subscriber.wait_messages(1)] == [b"c7"]


# provisioner verify


VERIFY_FILE = (
    USERS_FILE
    + """\
  - name: plant-client
    password: ${PLANT_PASSWORD}
    mqtt:
      vhost: /plant-a
      publish: ["plant/{username}/status"]
      subscribe: [plant/+/status]
  - name: hash-only
    password_hash: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    mqtt:
      publish: [other/hash-only]
"""
).replace("  - name: /\n", "  - name: /\n  - name: /plant-a\n")


@pytest.fixture
def verify_file(clean_broker, tmp_path):
    path = write(tmp_path, VERIFY_FILE)
    result = run_cli(clean_broker, "sync", users_file=path, env=ENV)
    assert result.returncode == 0, result.stderr
    return path


def run_verify(
    node: RabbitNode, path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {**ENV, "PROVISIONER_MQTT_URL": node.web_mqtt_url}
    return run_cli(node, "verify", *args, users_file=path, env=env)


def test_verify_all_ok(clean_broker, verify_file):
    result = run_verify(clean_broker, verify_file)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "user",
        "check",
        "topic/client",
        "id",
        "expected",
        "got",
        "ok",
    ]
    users = {line.split()[0] for line in lines[1:] if line[:1] not in (" ", "")}
    assert {"room-client", "sensor-a", "plant-client"} <= users
    assert "skipped 'hash-only'" in result.stdout
    assert "SURPRISE" not in result.stdout
    assert "all as declared" in lines[-1]


def test_verify_never_prints_passwords(clean_broker, verify_file):
    result = run_verify(clean_broker, verify_file, "--log-level", "DEBUG")

    for password in (ROOM_PASSWORD, SENSOR_PASSWORD, PLANT_PASSWORD):
        assert password not in result.stdout
        assert password not in result.stderr


def test_verify_one_user(clean_broker, verify_file):
    result = run_verify(clean_broker, verify_file, "--user", "sensor-a")

    assert result.returncode == 0, result.stdout + result.stderr
    rows = result.stdout.splitlines()[1:-1]
    assert rows
    assert all(row.startswith("sensor-a ") for row in rows)


def test_verify_finds_removed_topic_grant(clean_broker, verify_file):
    # Without a topic permission on amq.topic the user may use every topic.
    response = admin_session(clean_broker).delete(
        f"{clean_broker.management_url}/api/topic-permissions/%2F/room-client",
        timeout=10,
    )
    assert response.status_code == 204

    result = run_verify(clean_broker, verify_file, "--user", "room-client")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "SURPRISE" in result.stdout
    assert (
        "surprise: user 'room-client' (client id 'room-client-verify') may publish "
        "'/priv/room/sample-verify'" in result.stdout
    )
    assert "surprises: the broker does not enforce the users file" in result.stdout


def test_verify_wrong_password_is_surprise(clean_broker, verify_file):
    env = {**ENV, "ROOM_CLIENT_PASSWORD": "not-the-password"}
    env["PROVISIONER_MQTT_URL"] = clean_broker.web_mqtt_url
    result = run_cli(
        clean_broker, "verify", "--user", "room-client", users_file=verify_file, env=env
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "connect failed" in result.stdout
    assert "skipped 'room-client': the login failed" in result.stdout
    assert result.stdout.count("SURPRISE") == 1
    assert "not-the-password" not in result.stdout + result.stderr


def test_verify_unknown_user_invalid(clean_broker, verify_file):
    result = run_verify(clean_broker, verify_file, "--user", "nobody")

    assert result.returncode == 2
    assert "'nobody' is not declared" in result.stderr


def test_verify_wrong_url_unreachable(clean_broker, verify_file):
    # The management port speaks HTTP but not MQTT over WebSocket.
    url = f"ws://127.0.0.1:{clean_broker.management_port}/ws"
    result = run_verify(clean_broker, verify_file, "--mqtt-url", url)

    assert result.returncode == 3
    assert "not reachable" in result.stderr


def test_verify_other_vhost_login(clean_broker, verify_file):
    vhost = quote("/plant-a", safe="")
    permissions = api_get(clean_broker, f"permissions/{vhost}/plant-client")
    assert "mqtt-subscription-" in permissions["configure"]

    result = run_verify(clean_broker, verify_file, "--user", "plant-client")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "plant/plant-client/status" in result.stdout
