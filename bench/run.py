"""Benchmark the provisioner against the other ways of creating broker users.

Usage: ``python bench/run.py [--sizes 10,100,1000,5000] [--ctl-sample 3]``

Starts a throwaway RabbitMQ node on free loopback ports. For each size N
it measures the real CLI (cold sync, no-op sync, sync with 10% of the
passwords changed) and three other ways to create the same objects: the
broker's own definitions import, one PUT per object, and rabbitmqctl per
user (extrapolated from a sample). The broker is reset with one
bulk-delete between runs. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import baselines
from bench.measure import Sample, run_cli
from bench.workload import changed_users, make_users, write_users_file
from tests.rabbitmq_node import RabbitNode

CHANGED_FRACTION = 0.1
Row = tuple[int, str, Sample]


def main() -> int:
    args = _parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    with RabbitNode() as node, tempfile.TemporaryDirectory() as scratch:
        print(_machine(node.version), flush=True)
        rows: list[Row] = []
        for size in sizes:
            rows += _measure_size(
                node, size, Path(scratch), args.ctl_sample, args.repeat
            )
            print(f"measured N={size}", file=sys.stderr, flush=True)
    print(_table(rows))
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="10,100,1000,5000", help="comma-separated user counts"
    )
    parser.add_argument(
        "--ctl-sample",
        type=int,
        default=3,
        help="users to run rabbitmqctl for before extrapolating (default 3)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each provisioner row and of the import; the median is shown",
    )
    return parser.parse_args()


def _measure_size(
    node: RabbitNode, size: int, scratch: Path, ctl_sample: int, repeat: int
) -> list[Row]:
    users = make_users(size)
    users_file = scratch / f"users-{size}.yaml"
    changed_file = scratch / f"users-{size}-changed.yaml"
    write_users_file(users_file, users)
    write_users_file(changed_file, changed_users(users, CHANGED_FRACTION))

    def cold() -> Sample:
        baselines.reset(node)
        return run_cli(node, users_file)

    def broker_import() -> Sample:
        baselines.reset(node)
        return baselines.definitions_import(node, users)

    # Switching between the two files changes 10% of the passwords each time.
    files = iter([changed_file, users_file] * repeat)
    rows: list[Row] = [(size, "provisioner sync, cold", _median(cold, repeat))]
    rows.append(
        (
            size,
            "provisioner sync, no-op",
            _median(lambda: run_cli(node, users_file), repeat),
        )
    )
    rows.append(
        (
            size,
            "provisioner sync, 10% changed",
            _median(lambda: run_cli(node, next(files)), repeat),
        )
    )
    rows.append((size, "broker definitions import", _median(broker_import, repeat)))
    baselines.reset(node)
    rows.append((size, "one PUT per object", baselines.put_per_object(node, users)))
    baselines.reset(node)
    rows.append(
        (
            size,
            "rabbitmqctl per user",
            baselines.rabbitmqctl_per_user(node, users, ctl_sample),
        )
    )
    baselines.reset(node)
    return rows


def _median(measure: Callable[[], Sample], repeat: int) -> Sample:
    samples = sorted((measure() for _ in range(repeat)), key=lambda s: s.seconds)
    return samples[len(samples) // 2]


def _table(rows: list[Row]) -> str:
    imports = {size: s.seconds for size, name, s in rows if name.startswith("broker")}
    lines = [
        "| N | approach | time (s) | x broker import | HTTP requests | peak RSS (MB) | note |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for size, name, sample in rows:
        ratio = sample.seconds / imports[size]
        rss = f"{sample.peak_rss_mb:.1f}" if sample.peak_rss_mb is not None else ""
        requests = str(sample.requests) if sample.requests else "n/a"
        lines.append(
            f"| {size} | {name} | {sample.seconds:.3f} | {ratio:.2f} | "
            f"{requests} | {rss} | {sample.note} |"
        )
    return "\n".join(lines)


def _machine(version: str) -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"Machine: {cores} CPUs ({cpu}), Python {platform.python_version()}, "
        f"RabbitMQ {version}, load average at start {load}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
