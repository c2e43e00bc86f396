"""CLI behaviour that needs no broker: pipes, flags in messages, login checks."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "provisioner", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


def test_schema_into_closed_pipe_is_quiet():
    shell = f"{sys.executable} -m provisioner schema | head -c 1"
    result = subprocess.run(
        ["/bin/sh", "-c", shell],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout == "{"
    assert "Traceback" not in result.stderr
    assert "BrokenPipe" not in result.stderr


def test_bad_flag_value_names_the_flag():
    result = run("plan", "--wait-timeout", "-5")
    assert result.returncode == 2
    assert "--wait-timeout" in result.stderr


def test_username_without_password_is_named(tmp_path):
    users = tmp_path / "users.yaml"
    users.write_text("users: []\n", encoding="utf-8")
    result = run(
        "plan",
        "--file",
        str(users),
        env={
            "PROVISIONER_USERNAME": "ops",
            "PROVISIONER_MANAGEMENT_URL": "http://127.0.0.1:9",
        },
    )
    assert result.returncode == 2
    assert "PROVISIONER_PASSWORD" in result.stderr
    assert "'ops'" in result.stderr


def test_missing_users_file_names_path_and_flag(tmp_path):
    result = run("validate", "--file", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert str(tmp_path / "absent.yaml") in result.stderr
    assert "--file" in result.stderr


def test_validate_counts_singular(tmp_path):
    users = tmp_path / "users.yaml"
    users.write_text("users: [{name: a, password: x}]\n", encoding="utf-8")
    result = run("validate", "--file", str(users))
    assert result.returncode == 0
    assert "(1 user, 0 vhosts)" in result.stdout


def test_validate_rejects_login_lockout(tmp_path):
    users = tmp_path / "users.yaml"
    login = {"PROVISIONER_USERNAME": "ops", "PROVISIONER_PASSWORD": "ops-secret-1"}
    users.write_text(
        "users: [{name: ops, password: ops-secret-1, tags: []}]\n", encoding="utf-8"
    )
    demoted = run("validate", "--file", str(users), env=login)
    assert demoted.returncode == 2
    assert "administrator" in demoted.stderr
    users.write_text(
        "users: [{name: ops, password: other-secret-2, tags: [administrator]}]\n",
        encoding="utf-8",
    )
    rotated = run("validate", "--file", str(users), env=login)
    assert rotated.returncode == 2
    assert "locked out" in rotated.stderr
    assert "other-secret-2" not in rotated.stderr
    users.write_text(
        "users: [{name: ops, password: '${PROVISIONER_PASSWORD}', tags: [administrator]}]\n",
        encoding="utf-8",
    )
    same = run("validate", "--file", str(users), env=login)
    assert same.returncode == 0, same.stderr
