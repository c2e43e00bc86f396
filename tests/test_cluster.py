"""One sidecar per node of a two-node cluster, as each node's container runs it.

Every sidecar applies the same file to its own node. The users, grants and
hashes live in the cluster's shared metadata store, so the sidecars race
on the same objects. These tests show that the races are harmless,
because every sidecar exits 0 and each node then reports the declared
state.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from provisioner.passwords import HashingAlgorithm, password_matches
from tests.provisioner_cli import REPO, api_get, cli_env, run_cli

USER_COUNT = 50
SYNC_TIMEOUT_SECONDS = 120


def _write_file(
    path: Path, prefix: str, count: int, generation: str = "1"
) -> dict[str, str]:
    passwords = {
        f"{prefix}-{i:03d}": f"{prefix}-pw-{generation}-{i:03d}" for i in range(count)
    }
    lines = ["users:"]
    for name, password in passwords.items():
        lines += [
            f"  - name: {name}",
            f"    password: {password}",
            "    permissions:",
            f"      - {{vhost: /, configure: '^$', write: '^amq\\.topic$', read: '^{name}$'}}",
            "    topic_permissions:",
            f"      - {{vhost: /, exchange: amq.topic, write: '^{name}\\..+$', read: '^$'}}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return passwords


def _start_sync(node: Any, users_file: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "provisioner", "sync", "--file", str(users_file)]
    return subprocess.Popen(
        command,
        env=cli_env(node),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = process.communicate(timeout=SYNC_TIMEOUT_SECONDS)
    return process.returncode, out + err


def _assert_declared_state(node: Any, passwords: dict[str, str]) -> None:
    definitions = api_get(node, "definitions")
    users = {u["name"]: u for u in definitions["users"]}
    permissions = {(p["vhost"], p["user"]): p for p in definitions["permissions"]}
    topics = {
        (t["vhost"], t["user"], t["exchange"]): t
        for t in definitions["topic_permissions"]
    }
    for name, password in passwords.items():
        assert name in users, f"user {name} missing on {node.node_name}"
        stored = users[name]
        algorithm = HashingAlgorithm.from_broker(stored["hashing_algorithm"])
        assert password_matches(password, stored["password_hash"], algorithm), name
        assert permissions[("/", name)]["read"] == f"^{name}$"
        assert topics[("/", name, "amq.topic")]["write"] == f"^{name}\\..+$"


def _assert_plan_empty(node: Any, users_file: Path) -> None:
    result = run_cli(node, "plan", "--detailed-exitcode", users_file=users_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sidecars_on_both_nodes_converge(cluster, tmp_path):
    users_file = tmp_path / "users.yaml"
    passwords = _write_file(users_file, "both", USER_COUNT)

    processes = [_start_sync(node, users_file) for node in cluster]
    results = [_finish(process) for process in processes]

    for code, output in results:
        assert code == 0, output
    for node in cluster:
        _assert_declared_state(node, passwords)
        _assert_plan_empty(node, users_file)


def test_sync_while_other_node_stopped(cluster, tmp_path):
    first, second = cluster
    users_file = tmp_path / "users.yaml"
    passwords = _write_file(users_file, "down", USER_COUNT)

    second.stop()
    try:
        result = run_cli(first, "sync", users_file=users_file)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        second.start()

    _assert_declared_state(second, passwords)
    _assert_plan_empty(second, users_file)


def test_five_concurrent_syncs_alternate_nodes(cluster, tmp_path):
    users_file = tmp_path / "users.yaml"
    _write_file(users_file, "race", USER_COUNT // 2, generation="1")
    first_run = run_cli(cluster[0], "sync", users_file=users_file)
    assert first_run.returncode == 0, first_run.stderr
    # Every sidecar now rotates the same passwords and creates the same
    # new users at the same time.
    passwords = _write_file(users_file, "race", USER_COUNT, generation="2")

    processes = [
        _start_sync(cluster[index % len(cluster)], users_file) for index in range(5)
    ]
    results = [_finish(process) for process in processes]

    for code, output in results:
        assert code == 0, output
    for node in cluster:
        _assert_declared_state(node, passwords)
        _assert_plan_empty(node, users_file)
