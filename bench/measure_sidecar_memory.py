"""Measure the resident memory of ``python -m provisioner serve``.

The sidecar shares a 256 MB machine with the broker, so its memory decides
the headroom. This script starts a private RabbitMQ node on loopback
(tests/rabbitmq_node.py) and runs the real command against it:

- one-shot boot sync (reconcile interval 0) of the repository's users.yaml,
  then of a generated file of 1,000 users, each with one permission, first
  on an empty broker and then again with nothing to change;
- reconcile mode (interval 2 s) with each file: VmRSS and VmHWM sampled
  from /proc/PID/status after several cycles.

The peak of a one-shot run is the child's ru_maxrss from wait4(), in KiB.
Run it as root (the node runs Debian's server script) from the repository
root: ``PYTHONPATH=. python bench/measure_sidecar_memory.py``.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.rabbitmq_node import RabbitNode

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_FILE = REPO / "users.yaml"
GENERATED_USERS = 1000
RECONCILE_INTERVAL = "2"
RECONCILE_WARMUP_SECONDS = 12.0
SAMPLE_COUNT = 3
SAMPLE_GAP_SECONDS = 2.0


def generated_users_file(directory: Path, count: int) -> Path:
    lines = ["users:"]
    for index in range(count):
        lines += [
            f"  - name: device-{index:04d}",
            f"    password: pw-{index:04d}-not-secret",
            "    permissions:",
            f'      - {{vhost: /, configure: "^$", write: "^amq\\\\.topic$", '
            f'read: "^mqtt-subscription-device-{index:04d}qos[01]$"}}',
        ]
    path = directory / f"users-{count}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def serve_env(node: RabbitNode, users_file: Path, interval: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PROVISIONER_MANAGEMENT_URL": node.management_url,
        "PROVISIONER_USERNAME": node.admin_user,
        "PROVISIONER_PASSWORD": node.admin_password,
        "PROVISIONER_USERS_FILE": str(users_file),
        "PROVISIONER_RECONCILE_INTERVAL": interval,
        "ROOM_CLIENT_PASSWORD": "bench-only-password",
    }


def one_shot_peak_kib(node: RabbitNode, users_file: Path) -> tuple[int, float]:
    """Run one boot sync; return its max RSS in KiB and its wall time."""
    # A file, not a pipe: a sync of 1,000 users logs more than a pipe
    # buffer holds, and nothing reads the pipe during wait4().
    with tempfile.TemporaryFile() as log:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "provisioner", "serve"],
            env=serve_env(node, users_file, "0"),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            log.seek(0)
            output = log.read().decode(errors="replace")
            raise RuntimeError(f"serve failed ({process.returncode}):\n{output}")
    return usage.ru_maxrss, seconds


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reconcile_samples(node: RabbitNode, users_file: Path) -> tuple[list[int], int]:
    """Run reconcile mode; return VmRSS samples in KiB and the final VmHWM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "provisioner", "serve"],
        env=serve_env(node, users_file, RECONCILE_INTERVAL),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(RECONCILE_WARMUP_SECONDS)
        samples = []
        for _ in range(SAMPLE_COUNT):
            samples.append(status_kib(process.pid, "VmRSS"))
            time.sleep(SAMPLE_GAP_SECONDS)
        return samples, status_kib(process.pid, "VmHWM")
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    # SIGTERM (from timeout, for one) unwinds the with-blocks, so the
    # broker node is stopped and its directory deleted.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    print(f"date: {datetime.now(UTC).isoformat(timespec='seconds')}")
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}")
    print(f"python: {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as work, RabbitNode() as node:
        print(f"broker: RabbitMQ {node.version}")
        big_file = generated_users_file(Path(work), GENERATED_USERS)
        runs = [
            ("one-shot, users.yaml (1 user)", EXAMPLE_FILE),
            (f"one-shot, {GENERATED_USERS} users, empty broker", big_file),
            (f"one-shot, {GENERATED_USERS} users, nothing to change", big_file),
        ]
        for label, path in runs:
            peak, seconds = one_shot_peak_kib(node, path)
            print(f"{label}: max RSS {peak} KiB, {seconds:.2f} s")
        for label, path in [
            ("reconcile, users.yaml", EXAMPLE_FILE),
            (f"reconcile, {GENERATED_USERS} users", big_file),
        ]:
            samples, high_water = reconcile_samples(node, path)
            print(
                f"{label}: VmRSS {', '.join(map(str, samples))} KiB "
                f"after {RECONCILE_WARMUP_SECONDS:.0f} s, VmHWM {high_water} KiB"
            )


if __name__ == "__main__":
    main()
