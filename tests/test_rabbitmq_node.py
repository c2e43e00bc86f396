"""Tests of the throwaway broker helpers that the rest of the suite relies on."""

from __future__ import annotations

from pathlib import Path

import requests

from tests.broker_reset import reset_broker
from tests.rabbitmq_node import RabbitNode


def _user_names(node: RabbitNode) -> list[str]:
    response = node.session().get(node.management_url + "/api/users", timeout=10)
    response.raise_for_status()
    return sorted(user["name"] for user in response.json())


def _put(node: RabbitNode, path: str, body: object) -> None:
    response = node.session().put(node.management_url + path, json=body, timeout=10)
    response.raise_for_status()


def test_admin_logs_in(broker: RabbitNode) -> None:
    response = broker.session().get(broker.management_url + "/api/whoami", timeout=10)

    assert response.status_code == 200
    assert response.json()["name"] == broker.admin_user
    assert "administrator" in str(response.json()["tags"])
    assert broker.version


def test_wrong_password_rejected(broker: RabbitNode) -> None:
    url = broker.management_url + "/api/whoami"
    for auth in [(broker.admin_user, "not-the-password"), ("guest", "guest")]:
        response = requests.get(url, auth=auth, timeout=10)
        assert response.status_code == 401, auth[0]


def test_listeners_on_private_ports(broker: RabbitNode) -> None:
    response = broker.session().get(broker.management_url + "/api/overview", timeout=10)
    ports = {listener["port"] for listener in response.json()["listeners"]}

    assert broker.amqp_port in ports
    assert broker.mqtt_port in ports
    assert broker.web_mqtt_port in ports
    assert broker.web_mqtt_url == f"ws://127.0.0.1:{broker.web_mqtt_port}/ws"


def test_reset_removes_test_state(broker: RabbitNode) -> None:
    _put(broker, "/api/users/sensor%2F1", {"password": "x", "tags": ""})
    _put(broker, "/api/vhosts/devices", {})
    _put(broker, "/api/vhost-limits/%2F/max-queues", {"value": 5})
    _put(broker, f"/api/user-limits/{broker.admin_user}/max-channels", {"value": 5})

    reset_broker(broker)

    session = broker.session()
    base = broker.management_url
    vhosts = [v["name"] for v in session.get(base + "/api/vhosts").json()]
    permissions = session.get(base + f"/api/permissions/%2F/{broker.admin_user}").json()
    assert _user_names(broker) == [broker.admin_user]
    assert vhosts == ["/"]
    assert session.get(base + "/api/vhost-limits/%2F").json() == []
    assert session.get(base + f"/api/user-limits/{broker.admin_user}").json() == []
    assert permissions["configure"] == ".*"
    assert permissions["write"] == ".*"
    assert permissions["read"] == ".*"


def test_restart_keeps_wipe_clears(broker: RabbitNode) -> None:
    # The session node is reused because each fresh node costs seconds; it
    # ends with the same admin and ports, as other tests expect.
    _put(broker, "/api/users/kept", {"password": "x", "tags": ""})

    broker.restart()
    assert _user_names(broker) == sorted([broker.admin_user, "kept"])

    broker.stop(graceful=False)
    broker.wipe_data()
    broker.start()
    assert _user_names(broker) == [broker.admin_user]


def test_cluster_nodes_running(cluster: list[RabbitNode]) -> None:
    first = cluster[0]
    response = first.session().get(first.management_url + "/api/nodes", timeout=10)
    running = {node["name"] for node in response.json() if node["running"]}

    assert running == {node.node_name for node in cluster}


def test_server_command_private_files() -> None:
    extra_env = {"RABBITMQ_SERVER_START_ARGS": "+S 1:1"}
    node = RabbitNode(rabbitmq_root="", extra_env=extra_env)
    try:
        argv, env = node.server_command()
        config = (node.base_dir / "rabbitmq.conf").read_text()
    finally:
        node.cleanup()

    assert argv == ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
    assert env["RABBITMQ_NODENAME"] == node.node_name
    assert env["RABBITMQ_CONFIG_FILE"] == str(node.base_dir / "rabbitmq.conf")
    assert env["RABBITMQ_SERVER_START_ARGS"] == "+S 1:1"
    assert f"management.tcp.port = {node.management_port}" in config
    assert f"web_mqtt.tcp.port = {node.web_mqtt_port}" in config
    assert f"default_user = {node.admin_user}" in config
    assert not node.base_dir.exists()


def test_node_path_inside_chroot(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    node = RabbitNode(rabbitmq_root=str(tmp_path))
    certificate = node.node_path(node.base_dir / "server.pem")
    node.cleanup()

    assert node.base_dir.parent == tmp_path / "tmp"
    assert certificate == f"/tmp/{node.base_dir.name}/server.pem"
