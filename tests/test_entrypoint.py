"""Check entrypoint.sh's process handling with stand-in programs.

A stand-in interpreter plays `python -m provisioner serve` and a stand-in
rabbitmq-server plays the broker, so these tests need neither a broker nor
the real provisioner. They pin what the container relies on: the broker
keeps the entrypoint's PID, and PROVISIONER_ON_FAILURE decides whether a
failed provisioner stops it.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "entrypoint.sh"
BROKER_SECONDS = 10


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_broker(tmp_path: Path) -> Path:
    """Return a stand-in rabbitmq-server that records its PID and sleeps."""
    pid_file = tmp_path / "broker.pid"
    return write_script(
        tmp_path / "rabbitmq-server",
        f'echo $$ > "{pid_file}"\nexec sleep {BROKER_SECONDS}\n',
    )


def fake_python(tmp_path: Path, exit_status: int) -> Path:
    """Return a stand-in interpreter that records its arguments and exits."""
    args_file = tmp_path / "python.args"
    return write_script(
        tmp_path / "python",
        f'echo "$*" > "{args_file}"\n'
        f'echo "$PROVISIONER_BROKER_PID" > "{tmp_path / "python.broker_pid"}"\n'
        f"exit {exit_status}\n",
    )


def run_entrypoint(
    tmp_path: Path, broker: Path, python_status: int, on_failure: str
) -> tuple[subprocess.CompletedProcess[str], float, int]:
    env = {
        "PATH": os.environ["PATH"],
        "PROVISIONER_PYTHON": str(fake_python(tmp_path, python_status)),
        "PROVISIONER_BROKER_ENTRYPOINT": "",
        "PROVISIONER_ON_FAILURE": on_failure,
        "PROVISIONER_RUN_AS": "",
    }
    started = time.monotonic()
    process = subprocess.Popen(
        ["sh", str(ENTRYPOINT), str(broker)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=BROKER_SECONDS + 10)
    elapsed = time.monotonic() - started
    result = subprocess.CompletedProcess(
        process.args, process.returncode, stdout, stderr
    )
    return result, elapsed, process.pid


def test_broker_keeps_entrypoint_pid(tmp_path: Path, fake_broker: Path) -> None:
    result, _, entrypoint_pid = run_entrypoint(tmp_path, fake_broker, 1, "stop")
    broker_pid = int((tmp_path / "broker.pid").read_text())
    exported_pid = int((tmp_path / "python.broker_pid").read_text())
    assert broker_pid == entrypoint_pid
    assert exported_pid == entrypoint_pid
    assert result.returncode != 0


def test_provisioner_runs_serve(tmp_path: Path, fake_broker: Path) -> None:
    run_entrypoint(tmp_path, fake_broker, 1, "stop")
    assert (tmp_path / "python.args").read_text().strip() == "-m provisioner serve"


def test_stop_mode_stops_broker(tmp_path: Path, fake_broker: Path) -> None:
    result, elapsed, _ = run_entrypoint(tmp_path, fake_broker, 3, "stop")
    assert elapsed < BROKER_SECONDS / 2
    assert result.returncode == -15
    assert "exit status 3" in result.stderr
    assert "PROVISIONER_ON_FAILURE=stop" in result.stderr


def test_keep_mode_broker_runs_on(tmp_path: Path, fake_broker: Path) -> None:
    result, elapsed, _ = run_entrypoint(tmp_path, fake_broker, 3, "keep")
    assert elapsed >= BROKER_SECONDS
    assert result.returncode == 0
    assert "exit status 3" in result.stderr
    assert "PROVISIONER_ON_FAILURE=keep" in result.stderr


def test_invalid_on_failure_rejected(tmp_path: Path, fake_broker: Path) -> None:
    result, elapsed, _ = run_entrypoint(tmp_path, fake_broker, 0, "restart")
    assert result.returncode == 64
    assert "invalid PROVISIONER_ON_FAILURE 'restart'" in result.stderr
    assert not (tmp_path / "broker.pid").exists()
    assert elapsed < BROKER_SECONDS / 2


def test_other_command_skips_provisioner(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "PROVISIONER_PYTHON": str(fake_python(tmp_path, 0)),
        "PROVISIONER_BROKER_ENTRYPOINT": "",
    }
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "echo", "hello"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    time.sleep(0.5)
    assert result.stdout == "hello\n"
    assert not (tmp_path / "python.args").exists()
