"""The serve command as a process: signals, reloads and quiet cycles.

Each test runs ``python -m provisioner serve`` as a subprocess, because
signal handling only shows in a real process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.provisioner_cli import REPO, api_get, cli_env
from tests.rabbitmq_node import RabbitNode

STOP_SECONDS = 3.0
POLL_SECONDS = 0.05
LOUD_LEVELS = (" INFO ", " WARNING ", " ERROR ", " CRITICAL ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """A running ``provisioner serve`` with its stderr in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "provisioner", "serve"],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.process.poll() is not None:
                break
            time.sleep(POLL_SECONDS)
        return text in self.output()

    def stop(self) -> tuple[int, float]:
        """Send SIGTERM; return the exit status and the seconds it took."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=30)
        return status, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def serves() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    try:
        yield started
    finally:
        for serve in started:
            serve.kill()


def offline_env(users_file: Path, **extra: str) -> dict[str, str]:
    """Settings that point at a closed loopback port with a long wait."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "PROVISIONER_MANAGEMENT_URL": f"http://127.0.0.1:{free_port()}",
        "PROVISIONER_USERNAME": "ops",
        "PROVISIONER_PASSWORD": "not-used",
        "PROVISIONER_USERS_FILE": str(users_file),
        "PROVISIONER_WAIT_TIMEOUT": "600",
        **extra,
    }


def test_sigterm_mid_wait_exits_zero(tmp_path: Path, serves: list[Serve]) -> None:
    users_file = tmp_path / "users.yaml"
    users_file.write_text("users: [{name: a, password: pw}]\n")
    serve = Serve(offline_env(users_file), tmp_path / "serve.log")
    serves.append(serve)
    assert serve.wait_for_output("waiting for the broker", 10), serve.output()

    status, seconds = serve.stop()

    assert status == 0, serve.output()
    assert seconds < STOP_SECONDS
    assert "received SIGTERM; stopping" in serve.output()


def test_broker_exit_ends_wait(tmp_path: Path, serves: list[Serve]) -> None:
    users_file = tmp_path / "users.yaml"
    users_file.write_text("users: [{name: a, password: pw}]\n")
    stand_in = subprocess.Popen(["sleep", "60"])
    try:
        env = offline_env(users_file, PROVISIONER_BROKER_PID=str(stand_in.pid))
        serve = Serve(env, tmp_path / "serve.log")
        serves.append(serve)
        assert serve.wait_for_output("waiting for the broker", 10), serve.output()
        assert serve.process.poll() is None
    finally:
        stand_in.kill()
        stand_in.wait()

    status = serve.process.wait(timeout=10)

    assert status == 0, serve.output()
    assert f"the broker (PID {stand_in.pid}) has exited" in serve.output()


def broker_env(node: RabbitNode, users_file: Path, **extra: str) -> dict[str, str]:
    return cli_env(node, {"PROVISIONER_USERS_FILE": str(users_file), **extra})


def user_names(node: RabbitNode) -> set[str]:
    return {user["name"] for user in api_get(node, "users")}


def test_sighup_rereads_users_file(
    clean_broker: RabbitNode, tmp_path: Path, serves: list[Serve]
) -> None:
    users_file = tmp_path / "users.yaml"
    users_file.write_text("users: [{name: first, password: pw}]\n")
    # A long interval, so only the signal can explain a second sync.
    env = broker_env(clean_broker, users_file, PROVISIONER_RECONCILE_INTERVAL="600")
    serve = Serve(env, tmp_path / "serve.log")
    serves.append(serve)
    assert serve.wait_for_output("Applied:", 30), serve.output()
    before = users_file.stat()

    users_file.write_text(
        "users: [{name: first, password: pw}, {name: second, password: pw}]\n"
    )
    # Same modification time as before, so the file poll detects no change.
    os.utime(users_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(2)
    assert "second" not in user_names(clean_broker)
    serve.process.send_signal(signal.SIGHUP)

    assert serve.wait_for_output("received SIGHUP", 5), serve.output()
    deadline = time.monotonic() + 5
    while "second" not in user_names(clean_broker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "second" in user_names(clean_broker), serve.output()
    assert "loaded" in serve.output()
    assert serve.process.poll() is None


def test_noop_cycles_log_only_debug(
    clean_broker: RabbitNode, tmp_path: Path, serves: list[Serve]
) -> None:
    users_file = tmp_path / "users.yaml"
    users_file.write_text("users: [{name: quiet, password: pw}]\n")
    env = broker_env(clean_broker, users_file, PROVISIONER_RECONCILE_INTERVAL="1")
    serve = Serve(env, tmp_path / "serve.log")
    serves.append(serve)
    assert serve.wait_for_output("Applied:", 30), serve.output()

    time.sleep(3.5)
    output = serve.output()
    after_first_sync = output.split("Applied:", 1)[1].splitlines()[1:]
    status, _ = serve.stop()

    loud = [line for line in after_first_sync if any(k in line for k in LOUD_LEVELS)]
    assert loud == []
    assert status == 0
    assert serve.process.poll() == 0


def test_noop_cycles_run_at_debug(
    clean_broker: RabbitNode, tmp_path: Path, serves: list[Serve]
) -> None:
    users_file = tmp_path / "users.yaml"
    users_file.write_text("users: [{name: quiet, password: pw}]\n")
    env = broker_env(
        clean_broker,
        users_file,
        PROVISIONER_RECONCILE_INTERVAL="1",
        PROVISIONER_LOG_LEVEL="DEBUG",
    )
    serve = Serve(env, tmp_path / "serve.log")
    serves.append(serve)
    assert serve.wait_for_output("Applied:", 30), serve.output()

    time.sleep(3.5)
    serve.stop()

    # The quiet test above only means something if cycles did run.
    cycles = serve.output().split("Applied:", 1)[1].count("DEBUG provisioner.serve")
    assert cycles >= 2, serve.output()
