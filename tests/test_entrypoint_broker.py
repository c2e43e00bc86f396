"""Run entrypoint.sh with Debian's RabbitMQ and the real provisioner.

These tests start the broker the way the container does: entrypoint.sh
starts ``python -m provisioner serve`` in the background and execs
rabbitmq-server, which execs the Erlang VM. They check what the deployment
depends on. The declared accounts exist a few seconds after boot and work
for a real MQTT-over-WebSocket client, and a redeploy on an empty disk gets
them back. Reconcile mode repairs deletions and reloads edits. SIGTERM stops
broker and sidecar, and PROVISIONER_ON_FAILURE decides what a broken users
file does to the broker.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.entrypoint_process import (
    EntrypointRun,
    descendants,
    process_exists,
    sidecar_processes,
    wait_until,
)
from tests.mqtt_probe import qos1_round_trip
from tests.provisioner_cli import admin_session
from tests.rabbitmq_node import RabbitNode

pytestmark = pytest.mark.broker

CLIENT_ID = "dev1"
TOPIC = "/priv/room/sample"
ROUTING_KEY_REGEX = r"^\.priv\.room\.sample$"
BOOT_TIMEOUT = 60.0
RECONCILE_INTERVAL = 2.0
# Slack on top of the interval for the sidecar's poll step and a cycle.
RECONCILE_MARGIN = 8.0

USER_TEMPLATE = """\
  - name: {name}
    password: ${{{password_var}}}
    tags: []
    permissions:
      - vhost: /
        configure: "^mqtt-subscription-{client_id}qos[01]$"
        write: "^(amq\\\\.topic|mqtt-subscription-{client_id}qos[01])$"
        read: "^(amq\\\\.topic|mqtt-subscription-{client_id}qos[01])$"
    topic_permissions:
      - vhost: /
        exchange: amq.topic
        write: "{topic_regex}"
        read: "{topic_regex}"
"""


def users_yaml(*names: str) -> str:
    """A users file with one MQTT user per name, each bound to its own client id."""
    entries = [
        USER_TEMPLATE.format(
            name=name,
            password_var=password_variable(name),
            client_id=name,
            topic_regex=ROUTING_KEY_REGEX.replace("\\", "\\\\"),
        )
        for name in names
    ]
    return "users:\n" + "".join(entries)


def password_variable(name: str) -> str:
    return name.upper().replace("-", "_") + "_PASSWORD"


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    """A private node that only entrypoint.sh starts; never started directly."""
    rabbit = RabbitNode(name_prefix="entry")
    try:
        yield rabbit
    finally:
        rabbit.cleanup()


@pytest.fixture
def passwords() -> dict[str, str]:
    return {name: secrets.token_urlsafe(12) for name in ("dev1", "dev2")}


@pytest.fixture
def runs(node: RabbitNode) -> Iterator[list[EntrypointRun]]:
    """Entrypoint runs of one test; every process is killed afterwards."""
    started: list[EntrypointRun] = []
    try:
        yield started
    finally:
        for run in started:
            run.kill_all()
        node.stop(graceful=False)


def start(
    node: RabbitNode,
    runs: list[EntrypointRun],
    tmp_path: Path,
    users_file: Path,
    passwords: dict[str, str],
    **extra: str,
) -> EntrypointRun:
    env = {
        "PROVISIONER_MANAGEMENT_URL": node.management_url,
        "PROVISIONER_USERNAME": node.admin_user,
        "PROVISIONER_PASSWORD": node.admin_password,
        "PROVISIONER_USERS_FILE": str(users_file),
        "PROVISIONER_WAIT_TIMEOUT": str(BOOT_TIMEOUT),
        **{password_variable(name): value for name, value in passwords.items()},
        **extra,
    }
    # Waits until the ports of an earlier run are free, so a test never
    # talks to a broker that another run left behind.
    node.stop(graceful=False)
    run = EntrypointRun(node, tmp_path, env)
    runs.append(run)
    return run


def user_exists(node: RabbitNode, name: str) -> bool:
    try:
        response = admin_session(node).get(
            f"{node.management_url}/api/users/{quote(name, safe='')}", timeout=5
        )
    except OSError:
        return False
    return response.status_code == 200


def delete_user(node: RabbitNode, name: str) -> None:
    response = admin_session(node).delete(
        f"{node.management_url}/api/users/{quote(name, safe='')}", timeout=5
    )
    assert response.status_code == 204


def wait_for_user(node: RabbitNode, name: str, timeout: float) -> float | None:
    """Return the seconds until `name` existed, or None after `timeout`."""
    started = time.monotonic()
    if wait_until(lambda: user_exists(node, name), timeout):
        return time.monotonic() - started
    return None


def stop_cleanly(run: EntrypointRun) -> int:
    status = run.terminate()
    run.kill_all()
    return status


def test_boot_creates_working_mqtt_user(
    node: RabbitNode,
    runs: list[EntrypointRun],
    tmp_path: Path,
    passwords: dict[str, str],
) -> None:
    users_file = tmp_path / "users.yaml"
    users_file.write_text(users_yaml("dev1"))
    node.wipe_data()

    run = start(node, runs, tmp_path, users_file, passwords)
    waited = wait_for_user(node, "dev1", BOOT_TIMEOUT)

    assert waited is not None, run.output()
    print(f"boot: dev1 present {time.monotonic() - run.started:.1f} s after start")
    # The accounts can exist before the Web MQTT listener is up.
    node.wait_until_ready()
    trip = qos1_round_trip(
        node.web_mqtt_port, CLIENT_ID, "dev1", passwords["dev1"], TOPIC
    )
    assert trip.qos == 1
    assert trip.topic == TOPIC
    assert run.wait_for_output("provisioner serve finished", 10), run.output()
    assert run.process.poll() is None


def test_oneshot_sidecar_leaves_no_zombie(
    node: RabbitNode,
    runs: list[EntrypointRun],
    tmp_path: Path,
    passwords: dict[str, str],
) -> None:
    users_file = tmp_path / "users.yaml"
    users_file.write_text(users_yaml("dev1"))

    run = start(node, runs, tmp_path, users_file, passwords)
    assert run.wait_for_output("provisioner serve finished", BOOT_TIMEOUT), run.output()
    # The Erlang VM is the subshell's parent after the exec; it must reap it.
    time.sleep(1)
    children = descendants(run.pid)

    assert [child for child in children if child.state == "Z"] == []
    assert sidecar_processes(run.pid) == []
    assert stop_cleanly(run) == 0


def test_redeploy_on_empty_disk_restores_users(
    node: RabbitNode,
    runs: list[EntrypointRun],
    tmp_path: Path,
    passwords: dict[str, str],
) -> None:
    users_file = tmp_path / "users.yaml"
    users_file.write_text(users_yaml("dev1"))
    first = start(node, runs, tmp_path, users_file, passwords)
    assert wait_for_user(node, "dev1", BOOT_TIMEOUT) is not None, first.output()
    assert stop_cleanly(first) == 0

    node.wipe_data()
    assert list(node.mnesia_dir.iterdir()) == []
    second = start(node, runs, tmp_path, users_file, passwords)
    waited = wait_for_user(node, "dev1", BOOT_TIMEOUT)

    assert waited is not None, second.output()
    recovery = time.monotonic() - second.started
    print(f"redeploy: dev1 back {recovery:.1f} s after the entrypoint started")
    assert second.wait_for_output("Applied:", 5), second.output()
    node.wait_until_ready()
    trip = qos1_round_trip(
        node.web_mqtt_port, CLIENT_ID, "dev1", passwords["dev1"], TOPIC
    )
    assert trip.qos == 1


def test_reconcile_mode_repairs_and_reloads(
    node: RabbitNode,
    runs: list[EntrypointRun],
    tmp_path: Path,
    passwords: dict[str, str],
) -> None:
    users_file = tmp_path / "users.yaml"
    users_file.write_text(users_yaml("dev1"))
    run = start(
        node,
        runs,
        tmp_path,
        users_file,
        passwords,
        PROVISIONER_RECONCILE_INTERVAL=str(RECONCILE_INTERVAL),
    )
    assert wait_for_user(node, "dev1", BOOT_TIMEOUT) is not None, run.output()
    node.wait_until_ready()

    delete_user(node, "dev1")
    assert not user_exists(node, "dev1")
    restored = wait_for_user(node, "dev1", RECONCILE_INTERVAL + RECONCILE_MARGIN)
    assert restored is not None, run.output()
    print(f"reconcile: deleted dev1 back after {restored:.1f} s")

    users_file.write_text(users_yaml("dev1", "dev2"))
    added = wait_for_user(node, "dev2", RECONCILE_INTERVAL + RECONCILE_MARGIN)
    assert added is not None, run.output()
    trip = qos1_round_trip(node.web_mqtt_port, "dev2", "dev2", passwords["dev2"], TOPIC)
    assert trip.qos == 1

    users_file.write_text("users:\n  - name: dev1\n    tags: [\n")
    assert run.wait_for_output(
        "keeping the last valid users file in force",
        RECONCILE_INTERVAL + RECONCILE_MARGIN,
    ), run.output()
    time.sleep(RECONCILE_INTERVAL + 1)
    assert user_exists(node, "dev1")
    assert user_exists(node, "dev2")
    assert len(sidecar_processes(run.pid)) == 1
    assert run.process.poll() is None


def test_sigterm_stops_broker_and_sidecar(
    node: RabbitNode,
    runs: list[EntrypointRun],
    tmp_path: Path,
    passwords: dict[str, str],
) -> None:
    users_file = tmp_path / "users.yaml"
    users_file.write_text(users_yaml("dev1"))
    run = start(
        node,
        runs,
        tmp_path,
        users_file,
        passwords,
        PROVISIONER_RECONCILE_INTERVAL=str(RECONCILE_INTERVAL),
    )
    assert wait_for_user(node, "dev1", BOOT_TIMEOUT) is not None, run.output()
    sidecars = sidecar_processes(run.pid)
    assert len(sidecars) == 1

    stopping = time.monotonic()
    status = run.terminate()
    print(
        f"sigterm: broker exited with status {status} after "
        f"{time.monotonic() - stopping:.1f} s"
    )

    assert status == 0
    assert not process_exists(run.pid)
    assert wait_until(lambda: not process_exists(sidecars[0].pid), 10), run.output()
    assert sidecar_processes(run.pid) == []
    # RabbitMQ logs the clean shutdown to its log file, not to stdout.
    assert "SIGTERM received" in node.log_file.read_text(errors="replace")


def test_on_failure_stop_stops_broker(
    node: RabbitNode,
    runs: list[EntrypointRun],
    tmp_path: Path,
    passwords: dict[str, str],
) -> None:
    users_file = tmp_path / "users.yaml"
    users_file.write_text("users: [\n")
    run = start(
        node, runs, tmp_path, users_file, passwords, PROVISIONER_ON_FAILURE="stop"
    )

    status = run.process.wait(timeout=BOOT_TIMEOUT)

    print(f"on-failure stop: broker exited with status {status}")
    assert status == 0
    output = run.output()
    assert "failed with exit status 2" in output
    assert "PROVISIONER_ON_FAILURE=stop" in output
    assert sidecar_processes(run.pid) == []


def test_on_failure_keep_leaves_broker_running(
    node: RabbitNode,
    runs: list[EntrypointRun],
    tmp_path: Path,
    passwords: dict[str, str],
) -> None:
    users_file = tmp_path / "users.yaml"
    users_file.write_text("users: [\n")
    run = start(
        node, runs, tmp_path, users_file, passwords, PROVISIONER_ON_FAILURE="keep"
    )

    assert run.wait_for_output("PROVISIONER_ON_FAILURE=keep", BOOT_TIMEOUT), (
        run.output()
    )
    node.wait_until_ready()
    time.sleep(2)

    assert run.process.poll() is None
    assert "failed with exit status 2" in run.output()
    assert stop_cleanly(run) == 0
