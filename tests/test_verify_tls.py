"""verify over wss://: certificate verification stays on, with a CA bundle to trust.

A node of its own serves Web MQTT over TLS with a certificate from a
throwaway CA made with the openssl command line tool.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.provisioner_cli import run_cli
from tests.rabbitmq_node import RabbitNode, _allocate_port

PASSWORD = "room-client-tls-pw"
USERS_FILE = """\
users:
  - name: room-client
    password: ${ROOM_CLIENT_PASSWORD}
    mqtt:
      publish: [/priv/room/sample]
      subscribe: [/priv/room/#]
"""

pytestmark = pytest.mark.broker


def make_certificates(directory: Path) -> None:
    """Write ca.pem, server.pem and server.key for the IP address 127.0.0.1."""

    def openssl(*args: str) -> None:
        subprocess.run(
            ["openssl", *args], cwd=directory, check=True, capture_output=True
        )

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=provisioner test CA", "-keyout", "ca.key", "-out", "ca.pem",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr",
    )  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem",
    )  # fmt: skip
    for name in ("server.key", "server.pem", "ca.pem"):
        (directory / name).chmod(0o644)


def node_path(node: RabbitNode, path: Path) -> str:
    """Return ``path`` as the node sees it, inside its chroot if it has one."""
    if node.rabbitmq_root is None:
        return str(path)
    return "/" + str(path.relative_to(node.rabbitmq_root))


@pytest.fixture(scope="module")
def tls_node() -> Iterator[tuple[RabbitNode, int]]:
    node = RabbitNode(name_prefix="tls")
    tls_dir = node.base_dir / "tls"
    tls_dir.mkdir()
    make_certificates(tls_dir)
    port = _allocate_port()
    node.extra_config += [
        "web_mqtt.ssl.ip = 127.0.0.1",
        f"web_mqtt.ssl.port = {port}",
        f"web_mqtt.ssl.certfile = {node_path(node, tls_dir / 'server.pem')}",
        f"web_mqtt.ssl.keyfile = {node_path(node, tls_dir / 'server.key')}",
        f"web_mqtt.ssl.cacertfile = {node_path(node, tls_dir / 'ca.pem')}",
    ]
    try:
        node.start()
        yield node, port
    finally:
        node.cleanup()


def verify(
    node: RabbitNode, tmp_path: Path, url: str, *args: str
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "users.yaml"
    path.write_text(USERS_FILE)
    env = {"ROOM_CLIENT_PASSWORD": PASSWORD}
    synced = run_cli(node, "sync", users_file=path, env=env)
    assert synced.returncode == 0, synced.stderr
    return run_cli(node, "verify", "--mqtt-url", url, *args, users_file=path, env=env)


def test_wss_with_ca_bundle_ok(tls_node, tmp_path):
    node, port = tls_node
    ca = node.base_dir / "tls" / "ca.pem"

    result = verify(
        node, tmp_path, f"wss://127.0.0.1:{port}/ws", "--ca-bundle", str(ca)
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "all as declared" in result.stdout


def test_wss_untrusted_certificate_fails(tls_node, tmp_path):
    node, port = tls_node

    result = verify(node, tmp_path, f"wss://127.0.0.1:{port}/ws")

    assert result.returncode == 3, result.stdout + result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
