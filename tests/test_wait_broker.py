"""Waiting for a broker that is not up yet, and giving up at the deadline."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from tests.provisioner_cli import REPO, api_get, cli_env
from tests.rabbitmq_node import RabbitNode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sync_waits_for_broker_started_later(tmp_path):
    path = tmp_path / "users.yaml"
    path.write_text("users: [{name: late, password: pw}]\n", encoding="utf-8")
    node = RabbitNode()
    try:
        env = cli_env(node, {"PROVISIONER_WAIT_TIMEOUT": "120"})
        process = subprocess.Popen(
            [sys.executable, "-m", "provisioner", "sync", "--file", str(path)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)
        assert process.poll() is None, "sync must keep waiting while the broker is down"
        node.start()
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        assert "waiting for the broker" in stderr
        assert api_get(node, "users/late")["name"] == "late"
    finally:
        node.cleanup()


def test_deadline_gives_exit_code_3(tmp_path):
    path = tmp_path / "users.yaml"
    path.write_text("users: [{name: a, password: pw}]\n", encoding="utf-8")
    url = f"http://127.0.0.1:{free_port()}"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "PROVISIONER_MANAGEMENT_URL": url,
        "PROVISIONER_USERNAME": "ops",
        "PROVISIONER_PASSWORD": "pw",
        "PROVISIONER_WAIT_TIMEOUT": "2",
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "provisioner", "sync", "--file", str(path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    assert "was not ready within 2 s" in result.stderr
    assert "connection refused" in result.stderr
    assert elapsed < 30
