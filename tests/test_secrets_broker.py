"""Password sources against a real broker: hashes, matching and rejected input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import requests
from requests.auth import HTTPBasicAuth

from provisioner.passwords import HashingAlgorithm, hash_password, password_matches
from tests.mqtt_ws import WsClient
from tests.provisioner_cli import (
    REPO,
    admin_session,
    api_get,
    definitions_snapshot,
    run_cli,
)


def whoami(node, user: str, password: str) -> int:
    response = requests.get(
        f"{node.management_url}/api/whoami",
        auth=HTTPBasicAuth(user.encode("utf-8"), password.encode("utf-8")),
        timeout=10,
    )
    return response.status_code


def hash_with_cli(password: str, algorithm: str) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "provisioner",
            "hash-password",
            "--algorithm",
            algorithm,
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    return result.stdout.strip()


@pytest.mark.parametrize("algorithm", ["sha256", "sha512", "md5"])
def test_hash_password_user_logs_in(clean_broker, tmp_path, algorithm):
    password_hash = hash_with_cli("hashed-pw-✓", algorithm)
    path = tmp_path / "users.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            users:
              - name: hashed
                password_hash: "{password_hash}"
                hashing_algorithm: {algorithm}
                tags: [management]
                permissions: [{{vhost: /, configure: ".*", write: ".*", read: ".*"}}]
            """
        ),
        encoding="utf-8",
    )
    result = run_cli(clean_broker, "sync", users_file=path)
    assert result.returncode == 0, result.stderr
    assert whoami(clean_broker, "hashed", "hashed-pw-✓") == 200
    assert whoami(clean_broker, "hashed", "wrong") == 401

    client = WsClient(clean_broker, "hashed", "hashed-pw-✓", f"hashed-{algorithm}")
    assert client.start()
    client.stop()

    plan = run_cli(clean_broker, "plan", "--detailed-exitcode", users_file=path)
    assert plan.returncode == 0, plan.stdout + plan.stderr


def test_broker_made_sha256_hash_matches(clean_broker, tmp_path):
    session = admin_session(clean_broker)
    response = session.put(
        f"{clean_broker.management_url}/api/users/api-made",
        json={"password": "made-by-api", "tags": ""},
        timeout=10,
    )
    assert response.status_code == 201
    stored = api_get(clean_broker, "users/api-made")
    assert stored["hashing_algorithm"] == HashingAlgorithm.SHA256.value

    path = tmp_path / "users.yaml"
    path.write_text("users:\n  - {name: api-made, password: made-by-api}\n")
    plan = run_cli(clean_broker, "plan", "--detailed-exitcode", users_file=path)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "No changes" in plan.stdout


@pytest.mark.parametrize("algorithm", [HashingAlgorithm.SHA512, HashingAlgorithm.MD5])
def test_stored_hash_matches_plain_password(clean_broker, tmp_path, algorithm):
    hashed = tmp_path / "hashed.yaml"
    hashed.write_text(
        "users:\n"
        f"  - {{name: h1, password_hash: '{hash_password('plain-pw', algorithm)}', "
        f"hashing_algorithm: {algorithm.short_name}}}\n"
    )
    result = run_cli(clean_broker, "sync", users_file=hashed)
    assert result.returncode == 0, result.stderr
    assert api_get(clean_broker, "users/h1")["hashing_algorithm"] == algorithm.value

    plain = tmp_path / "plain.yaml"
    plain.write_text("users:\n  - {name: h1, password: plain-pw}\n")
    plan = run_cli(clean_broker, "plan", "--detailed-exitcode", users_file=plain)
    assert plan.returncode == 0, plan.stdout + plan.stderr


def test_remove_guest_on_real_broker(clean_broker, tmp_path):
    session = admin_session(clean_broker)
    response = session.put(
        f"{clean_broker.management_url}/api/users/guest",
        json={"password": "guest", "tags": "administrator"},
        timeout=10,
    )
    assert response.status_code == 201
    path = tmp_path / "users.yaml"
    path.write_text("users: []\n")
    env = {"PROVISIONER_REMOVE_GUEST": "true"}

    plan = run_cli(clean_broker, "plan", users_file=path, env=env)
    assert "- delete user 'guest'" in plan.stdout
    result = run_cli(clean_broker, "sync", users_file=path, env=env)
    assert result.returncode == 0, result.stderr
    names = [u["name"] for u in api_get(clean_broker, "users")]
    assert "guest" not in names
    assert clean_broker.admin_user in names


SECRET_VALUE = "Do-Not-Print-9d1e"
INVALID_SOURCES = [
    ("missing-var", "password: ${NOT_SET_ANYWHERE}", "NOT_SET_ANYWHERE"),
    ("fallback", "password: ${SOME_VAR:-" + SECRET_VALUE + "}", "SOME_VAR"),
    ("unreadable", "password_file: no-such.secret", "no-such.secret"),
    ("empty-file", "password_file: empty.secret", "empty.secret"),
    (
        "hex",
        "password_hash: " + "ab" * 32,
        "hex digest",
    ),
    ("short-b64", "password_hash: AAAAAAAAAAAAAAAAAAAAAAAAAAA=", "decodes to"),
    (
        "two-sources",
        "password: " + SECRET_VALUE + "\n    password_file: empty.secret",
        "exactly one",
    ),
    ("no-source", "tags: [management]", "exactly one"),
    (
        "bad-algorithm",
        "password: " + SECRET_VALUE + "\n    hashing_algorithm: sha1",
        "hashing_algorithm",
    ),
]


@pytest.mark.parametrize(
    ("user", "source", "named"), INVALID_SOURCES, ids=[i[0] for i in INVALID_SOURCES]
)
def test_invalid_source_rejected_untouched(clean_broker, tmp_path, user, source, named):
    (tmp_path / "empty.secret").write_text("")
    path = tmp_path / "users.yaml"
    path.write_text(
        f"users:\n  - name: {user}\n    {source}\n  - name: fine\n    password: ok-pw\n"
    )
    before = definitions_snapshot(clean_broker)
    result = run_cli(clean_broker, "sync", users_file=path, env={"SOME_VAR": "x"})
    assert result.returncode == 2
    assert named in result.stderr
    assert f"user {user!r}" in result.stderr
    assert SECRET_VALUE not in result.stdout + result.stderr
    assert definitions_snapshot(clean_broker) == before
    assert "fine" not in [u["name"] for u in before["users"]]


def test_plain_password_algorithm_honoured(clean_broker, tmp_path):
    path = tmp_path / "users.yaml"
    path.write_text(
        "users:\n  - {name: alg, password: alg-pw, hashing_algorithm: sha512}\n"
    )
    result = run_cli(clean_broker, "sync", users_file=path)
    assert result.returncode == 0, result.stderr
    stored = api_get(clean_broker, "users/alg")
    assert stored["hashing_algorithm"] == HashingAlgorithm.SHA512.value

    # Without an explicit algorithm a matching password is never rewritten.
    path.write_text("users:\n  - {name: alg, password: alg-pw}\n")
    plan = run_cli(clean_broker, "plan", "--detailed-exitcode", users_file=path)
    assert plan.returncode == 0, plan.stdout + plan.stderr

    # An explicit other algorithm rewrites the same password.
    path.write_text(
        "users:\n  - {name: alg, password: alg-pw, hashing_algorithm: sha256}\n"
    )
    plan = run_cli(clean_broker, "plan", "--detailed-exitcode", users_file=path)
    assert plan.returncode == 4
    assert "update user 'alg' (password)" in plan.stdout
    result = run_cli(clean_broker, "sync", users_file=path)
    assert result.returncode == 0, result.stderr
    stored = api_get(clean_broker, "users/alg")
    assert stored["hashing_algorithm"] == HashingAlgorithm.SHA256.value
    assert password_matches("alg-pw", stored["password_hash"], HashingAlgorithm.SHA256)
