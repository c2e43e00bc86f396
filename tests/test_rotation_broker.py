"""Password rotation and what it does to a live MQTT-over-WebSocket client."""

from __future__ import annotations

import textwrap
import time

from tests.mqtt_ws import WsClient, wait_for_connection
from tests.provisioner_cli import api_get, run_cli

USERS = """
users:
  - name: dev1
    password: ${DEV1_PASSWORD}
    permissions: [{vhost: /, configure: ".*", write: ".*", read: ".*"}]
"""


def sync(node, path, password, *flags):
    result = run_cli(
        node, "sync", *flags, users_file=path, env={"DEV1_PASSWORD": password}
    )
    assert result.returncode == 0, result.stderr
    return result


def test_rotation_keeps_or_closes_live_client(clean_broker, tmp_path):
    path = tmp_path / "users.yaml"
    path.write_text(textwrap.dedent(USERS), encoding="utf-8")
    sync(clean_broker, path, "alpha-pw")

    client = WsClient(clean_broker, "dev1", "alpha-pw", "dev1-live")
    assert client.start()
    wait_for_connection(clean_broker, "dev1")

    # Without the option the broker keeps the session that logged in with
    # the old password, and it can still publish.
    rotated = sync(clean_broker, path, "beta-pw")
    assert "1 to update" in rotated.stdout
    time.sleep(2)
    assert not client.disconnected.is_set()
    assert client.publish("sensors/dev1/a")

    # With the option the session is closed right after the change.
    closed = sync(clean_broker, path, "gamma-pw", "--close-connections")
    assert "closed 1 connection" in closed.stderr
    assert client.disconnected.wait(5)
    client.stop()

    # The broker either sends a rejecting CONNACK or closes the socket
    # before any CONNACK; both mean the old password no longer logs in.
    old = WsClient(clean_broker, "dev1", "beta-pw", "dev1-old")
    assert not old.start()
    assert not old.connected.is_set()
    assert old.refused.is_set() or old.disconnected.is_set()
    old.stop()

    new = WsClient(clean_broker, "dev1", "gamma-pw", "dev1-new")
    assert new.start()
    new.stop()


def test_unchanged_password_closes_nothing(clean_broker, tmp_path):
    path = tmp_path / "users.yaml"
    path.write_text(textwrap.dedent(USERS), encoding="utf-8")
    sync(clean_broker, path, "alpha-pw")
    client = WsClient(clean_broker, "dev1", "alpha-pw", "dev1-stay")
    assert client.start()
    wait_for_connection(clean_broker, "dev1")

    again = sync(clean_broker, path, "alpha-pw", "--close-connections")
    assert "closed" not in again.stderr
    time.sleep(1)
    assert not client.disconnected.is_set()
    assert client.publish("sensors/dev1/b")
    client.stop()


def test_deleted_user_connection_closed(clean_broker, tmp_path):
    path = tmp_path / "users.yaml"
    path.write_text(textwrap.dedent(USERS), encoding="utf-8")
    sync(clean_broker, path, "alpha-pw")
    client = WsClient(clean_broker, "dev1", "alpha-pw", "dev1-gone")
    assert client.start()
    wait_for_connection(clean_broker, "dev1")

    path.write_text("users: []\nprune: {users: true, allow_empty: true}\n")
    result = run_cli(
        clean_broker,
        "sync",
        "--close-connections",
        users_file=path,
        env={"PROVISIONER_LOG_LEVEL": "INFO"},
    )
    assert result.returncode == 0, result.stderr
    assert client.disconnected.wait(5)
    client.stop()
    names = [u["name"] for u in api_get(clean_broker, "users")]
    assert "dev1" not in names
