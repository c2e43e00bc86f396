"""Run entrypoint.sh with a real broker command, as the container does.

The entrypoint execs the broker, so the process started here ends up being
the broker: with ``RUNNING_UNDER_SYSTEMD=true`` (as in the official image)
Debian's rabbitmq-server script execs the Erlang VM too, so the PID is
beam.smp's. The sidecar (a subshell plus ``python -m provisioner serve``)
runs as a child of that PID. Everything runs in a session of its own, so a
test can always kill what is left with one signal to the process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.rabbitmq_node import RabbitNode

REPO = Path(__file__).resolve().parent.parent
ENTRYPOINT = REPO / "entrypoint.sh"
SERVER_NAME = "rabbitmq-server"
POLL_SECONDS = 0.1


@dataclass
class ProcessInfo:
    """One line of /proc: a process id, its parent, state and command line."""

    pid: int
    ppid: int
    state: str
    cmdline: str


def list_processes() -> list[ProcessInfo]:
    """Return every process visible in /proc (those that vanish are skipped)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(
            line.split(":\t", 1) for line in status.splitlines() if ":\t" in line
        )
        found.append(
            ProcessInfo(
                pid=int(entry.name),
                ppid=int(fields["PPid"]),
                state=fields["State"].split()[0],
                cmdline=cmdline.replace(b"\0", b" ").decode(errors="replace"),
            )
        )
    return found


def descendants(root: int) -> list[ProcessInfo]:
    """Return the processes below `root` in the process tree."""
    processes = list_processes()
    children: dict[int, list[ProcessInfo]] = {}
    for process in processes:
        children.setdefault(process.ppid, []).append(process)
    found: list[ProcessInfo] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child.pid)
    return found


def sidecar_processes(session_id: int) -> list[ProcessInfo]:
    """Return the ``provisioner serve`` processes of one session, wherever they hang."""
    found = []
    for process in list_processes():
        if "-m provisioner serve" not in process.cmdline:
            continue
        with contextlib.suppress(ProcessLookupError):
            if os.getsid(process.pid) == session_id:
                found.append(process)
    return found


def broker_command(
    node: RabbitNode, work_dir: Path
) -> tuple[list[str], dict[str, str]]:
    """Return an argv whose program is named rabbitmq-server, and its environment.

    The entrypoint starts the sidecar only for a program of that name. A
    node run from a chroot starts with ``chroot``, so a small script of that
    name execs the real command.
    """
    argv, env = node.server_command()
    if Path(argv[0]).name != SERVER_NAME:
        wrapper = work_dir / SERVER_NAME
        quoted = " ".join(f"'{arg}'" for arg in argv)
        wrapper.write_text(f'#!/bin/sh\nexec {quoted} "$@"\n')
        wrapper.chmod(0o755)
        argv = [str(wrapper)]
    return argv, env


class EntrypointRun:
    """entrypoint.sh running a private broker, with its output in a file."""

    def __init__(self, node: RabbitNode, work_dir: Path, env: dict[str, str]) -> None:
        argv, node_env = broker_command(node, work_dir)
        self.node = node
        self.log_path = work_dir / f"entrypoint-{time.monotonic_ns()}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        full_env = {
            **node_env,
            "RUNNING_UNDER_SYSTEMD": "true",
            "PROVISIONER_PYTHON": sys.executable,
            "PROVISIONER_BROKER_ENTRYPOINT": "",
            "PROVISIONER_RUN_AS": "",
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [str(ENTRYPOINT), *argv],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # A broker that fails to boot writes erl_crash.dump here.
            cwd=work_dir,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The entrypoint's PID, which the broker takes over."""
        return self.process.pid

    def output(self) -> str:
        """Everything the entrypoint, broker and sidecar wrote so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> bool:
        """Return whether `text` appeared in the output within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            time.sleep(POLL_SECONDS)
        return text in self.output()

    def terminate(self, timeout: float = 60.0) -> int:
        """Send SIGTERM to the entrypoint's PID and return its exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill_all(self) -> None:
        """Kill every process of the run's session, sidecar included.

        The caller stops the node afterwards (`RabbitNode.stop`), which
        waits until its ports are free, once all runs are dead.
        """
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        for process in sidecar_processes(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        # The broker wrote this file; once it is dead the PID may belong to
        # another process, so the node must not signal it.
        (self.node.base_dir / "node.pid").unlink(missing_ok=True)
        self._log.close()


def process_exists(pid: int) -> bool:
    """Return whether `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


def wait_until(predicate: Any, timeout: float) -> bool:
    """Poll `predicate` until it returns true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(POLL_SECONDS)
    return bool(predicate())
