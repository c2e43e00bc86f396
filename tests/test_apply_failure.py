"""A definitions import that fails part way leaves the next sync able to finish."""

from __future__ import annotations

from pathlib import Path

from provisioner.apply import IMPORT_CHUNK_USERS
from tests.failing_proxy import failing_proxy
from tests.provisioner_cli import api_get, run_cli

# Two imports: the first goes through, the second (and the one retry the
# provisioner makes of a rejected import) is half applied.
USER_COUNT = IMPORT_CHUNK_USERS + 200


def _write_file(path: Path) -> list[str]:
    names = [f"partial-{i:05d}" for i in range(USER_COUNT)]
    lines = ["users:"]
    for name in names:
        lines += [
            f"  - name: {name}",
            f"    password: pw-{name}",
            "    permissions: [{vhost: /, configure: '^$', write: '^$', read: '^$'}]",
            "    topic_permissions: [{vhost: /, exchange: amq.topic, write: '^$', read: '^$'}]",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return names


def _live_users(node) -> set[str]:
    return {u["name"] for u in api_get(node, "users?columns=name")}


def test_failed_import_reported_then_finished(clean_broker, tmp_path):
    users_file = tmp_path / "users.yaml"
    names = _write_file(users_file)

    with failing_proxy(clean_broker.management_url, fail_import=2) as url:
        failed = run_cli(
            clean_broker,
            "sync",
            users_file=users_file,
            env={"PROVISIONER_MANAGEMENT_URL": url},
        )

    assert failed.returncode == 1, failed.stderr
    applied = 3 * IMPORT_CHUNK_USERS
    assert f"{applied} of {3 * USER_COUNT} changes were applied" in failed.stderr
    assert "may be partly applied" in failed.stderr
    assert "run sync again" in failed.stderr
    live = _live_users(clean_broker)
    half_of_second = (USER_COUNT - IMPORT_CHUNK_USERS) // 2
    assert len(live & set(names)) == IMPORT_CHUNK_USERS + half_of_second

    finished = run_cli(clean_broker, "sync", users_file=users_file)

    assert finished.returncode == 0, finished.stderr
    assert f"Applied: {3 * (USER_COUNT - len(live & set(names)))} to create" in (
        finished.stdout
    )
    assert set(names) <= _live_users(clean_broker)
    plan = run_cli(clean_broker, "plan", "--detailed-exitcode", users_file=users_file)
    assert plan.returncode == 0, plan.stdout
