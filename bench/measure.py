"""Time, count and weigh one run of the real CLI or of a comparison client.

The CLI runs as a subprocess, as an operator runs it, and is reaped with
``os.wait4`` so the peak resident memory is that process's alone. Its HTTP
requests are counted from the client's DEBUG log lines, one per request
sent (retries included).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
REQUEST_LOG_MARK = " provisioner.client: "


@dataclass(frozen=True)
class Sample:
    """One measured run: wall time, HTTP requests and peak RSS (None if not the CLI)."""

    seconds: float
    requests: int
    peak_rss_mb: float | None = None
    note: str = ""


def run_cli(node: Any, users_file: Path, *args: str) -> Sample:
    """Run ``python -m provisioner sync`` on ``users_file``; raise if it fails."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "PROVISIONER_MANAGEMENT_URL": node.management_url,
        "PROVISIONER_USERNAME": node.admin_user,
        "PROVISIONER_PASSWORD": node.admin_password,
        "PROVISIONER_LOG_LEVEL": "DEBUG",
    }
    command = [sys.executable, "-m", "provisioner", "sync", "--file", str(users_file)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            [*command, *args], env=env, stdout=out, stderr=err, cwd=REPO
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        log = err.read().decode("utf-8", "replace")
    if process.returncode != 0:
        raise RuntimeError(f"sync exited with {process.returncode}:\n{log[-2000:]}")
    requests = sum(
        1 for line in log.splitlines() if REQUEST_LOG_MARK in line and " -> " in line
    )
    # ru_maxrss is in kilobytes on Linux.
    return Sample(seconds, requests, usage.ru_maxrss / 1024)


def timed(action: Any, *args: Any) -> tuple[float, Any]:
    """Call ``action(*args)`` and return the seconds it took and its result."""
    started = time.perf_counter()
    result = action(*args)
    return time.perf_counter() - started, result
