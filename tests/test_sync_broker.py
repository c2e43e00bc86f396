"""Acceptance tests: the real CLI against a real throwaway RabbitMQ node."""

from __future__ import annotations

import textwrap
from pathlib import Path
from urllib.parse import quote

import requests
from requests.auth import HTTPBasicAuth

from provisioner.passwords import HashingAlgorithm, password_matches
from tests.provisioner_cli import (
    admin_session,
    api_get,
    definitions_snapshot,
    run_cli,
    write_mutating_requests,
)

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "users.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def whoami(node, user: str, password: str) -> int:
    response = requests.get(
        f"{node.management_url}/api/whoami",
        auth=HTTPBasicAuth(user.encode("utf-8"), password.encode("utf-8")),
        timeout=10,
    )
    return response.status_code


def test_example_file_provisions_and_converges(clean_broker, tmp_path):
    env = {"SENSOR_01_PASSWORD": "sensor-one-pw"}
    result = run_cli(
        clean_broker, "sync", users_file=REPO / "examples" / "telemetry.yaml", env=env
    )
    assert result.returncode == 0, result.stderr

    user = api_get(clean_broker, "users/sensor-01")
    assert user["tags"] in ([], "")
    assert (
        api_get(clean_broker, "permissions/telemetry/sensor-01")["write"]
        == r"^amq\.topic$"
    )
    topic = api_get(clean_broker, "topic-permissions/telemetry/sensor-01")
    assert topic[0]["write"] == r"^sensors\.sensor-01\..+$"
    assert api_get(clean_broker, "user-limits/sensor-01")[0]["value"] == {
        "max-connections": 2,
        "max-channels": 4,
    }
    assert api_get(clean_broker, "vhost-limits/telemetry")[0]["value"] == {
        "max-connections": 200,
        "max-queues": 1000,
    }
    assert api_get(clean_broker, "vhosts/telemetry")["description"] == "Sensor traffic"

    plan = run_cli(
        clean_broker,
        "plan",
        "--detailed-exitcode",
        users_file=REPO / "examples" / "telemetry.yaml",
        env=env,
    )
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "No changes" in plan.stdout


def test_second_sync_sends_no_write(clean_broker, tmp_path):
    path = write(
        tmp_path,
        """
        users:
          - name: s1
            password: pw-one
            tags: [management]
            limits: {max-connections: -1}
            permissions: [{vhost: /, read: "^q$"}]
            topic_permissions: [{vhost: /, write: "^a$"}]
        """,
    )
    first = run_cli(clean_broker, "sync", "--log-level", "DEBUG", users_file=path)
    assert first.returncode == 0, first.stderr
    assert write_mutating_requests(first.stderr)

    second = run_cli(clean_broker, "sync", "--log-level", "DEBUG", users_file=path)
    assert second.returncode == 0, second.stderr
    assert write_mutating_requests(second.stderr) == []
    assert "Applied: 0 to create" in second.stdout or "No changes" in second.stdout


def test_special_user_name_and_non_ascii_password(clean_broker, tmp_path):
    odd_name = "dev/one@site:a#1%"
    password = "pässwört-✓-密码"
    path = write(
        tmp_path,
        f"""
        users:
          - name: "{odd_name}"
            password: ${{ODD_PW}}
            tags: management
            permissions: [{{vhost: /, read: ".*"}}]
          - name: "ñandú"
            password: ${{ODD_PW}}
            tags: management
        """,
    )
    env = {"ODD_PW": password}
    result = run_cli(clean_broker, "sync", users_file=path, env=env)
    assert result.returncode == 0, result.stderr

    stored = api_get(clean_broker, "users/" + quote(odd_name, safe=""))
    algorithm = HashingAlgorithm(stored["hashing_algorithm"])
    assert password_matches(password, stored["password_hash"], algorithm)
    assert (
        api_get(clean_broker, "permissions/%2F/" + quote(odd_name, safe=""))["read"]
        == ".*"
    )
    # HTTP Basic auth cannot carry a ":" in the user name, so the login
    # check uses the second user.
    assert whoami(clean_broker, "ñandú", password) == 200
    assert whoami(clean_broker, "ñandú", "wrong") == 401

    plan = run_cli(
        clean_broker, "plan", "--detailed-exitcode", users_file=path, env=env
    )
    assert plan.returncode == 0, plan.stdout


def test_vhost_names_with_slash(clean_broker, tmp_path):
    path = write(
        tmp_path,
        r"""
        vhosts:
          - name: /
          - name: /plant-a
        users:
          - name: dev1
            password: pw
            permissions:
              - {vhost: /plant-a, configure: "^$", write: "^amq\\.topic$", read: "^$"}
              - {vhost: /, read: "^x$"}
        """,
    )
    result = run_cli(clean_broker, "sync", users_file=path)
    assert result.returncode == 0, result.stderr
    session = admin_session(clean_broker)
    url = f"{clean_broker.management_url}/api/permissions/%2Fplant-a/dev1"
    assert session.get(url, timeout=10).json()["write"] == r"^amq\.topic$"
    assert api_get(clean_broker, "permissions/%2F/dev1")["read"] == "^x$"


def test_tags_list_then_string_form(clean_broker, tmp_path):
    listed = write(
        tmp_path, "users: [{name: t1, password: pw, tags: [management, monitoring]}]"
    )
    assert run_cli(clean_broker, "sync", users_file=listed).returncode == 0
    as_string = write(
        tmp_path,
        "users: [{name: t1, password: pw, tags: 'monitoring,management'}]",
        "b.yaml",
    )
    same = run_cli(clean_broker, "plan", "--detailed-exitcode", users_file=as_string)
    assert same.returncode == 0, same.stdout
    changed = write(
        tmp_path, "users: [{name: t1, password: pw, tags: 'management'}]", "c.yaml"
    )
    plan = run_cli(clean_broker, "plan", "--detailed-exitcode", users_file=changed)
    assert plan.returncode == 4
    assert "update user 't1' (tags)" in plan.stdout
    assert run_cli(clean_broker, "sync", users_file=changed).returncode == 0
    assert sorted(api_get(clean_broker, "users/t1")["tags"]) == ["management"]


def test_removed_permission_deleted(clean_broker, tmp_path):
    both = write(
        tmp_path,
        """
        vhosts: [{name: a}, {name: b}]
        users:
          - name: p1
            password: pw
            permissions: [{vhost: a, read: ".*"}, {vhost: b, read: ".*"}]
            topic_permissions: [{vhost: a, write: "^x$"}, {vhost: a, exchange: amq.direct, write: "^y$"}]
        """,
    )
    assert run_cli(clean_broker, "sync", users_file=both).returncode == 0
    one = write(
        tmp_path,
        """
        vhosts: [{name: a}, {name: b}]
        users:
          - name: p1
            password: pw
            permissions: [{vhost: a, read: ".*"}]
            topic_permissions: [{vhost: a, write: "^x$"}]
        """,
        "one.yaml",
    )
    plan = run_cli(clean_broker, "plan", users_file=one)
    assert "delete permission of user 'p1' on vhost 'b'" in plan.stdout
    assert "exchange 'amq.direct'" in plan.stdout
    assert run_cli(clean_broker, "sync", users_file=one).returncode == 0
    permissions = api_get(clean_broker, "users/p1/permissions")
    assert [p["vhost"] for p in permissions] == ["a"]
    topics = api_get(clean_broker, "users/p1/topic-permissions")
    assert [t["exchange"] for t in topics] == ["amq.topic"]


def test_changed_password_updates_only_password(clean_broker, tmp_path):
    path = write(
        tmp_path, "users: [{name: rot, password: '${ROT_PW}', tags: [management]}]"
    )
    assert (
        run_cli(
            clean_broker, "sync", users_file=path, env={"ROT_PW": "alpha-1"}
        ).returncode
        == 0
    )
    before = api_get(clean_broker, "users/rot")
    plan = run_cli(clean_broker, "plan", users_file=path, env={"ROT_PW": "beta-2"})
    assert "update user 'rot' (password)" in plan.stdout
    assert "1 to update" in plan.stdout
    assert (
        run_cli(
            clean_broker, "sync", users_file=path, env={"ROT_PW": "beta-2"}
        ).returncode
        == 0
    )
    after = api_get(clean_broker, "users/rot")
    assert after["password_hash"] != before["password_hash"]
    assert after["tags"] == before["tags"]
    assert whoami(clean_broker, "rot", "beta-2") == 200
    assert whoami(clean_broker, "rot", "alpha-1") == 401


def test_per_object_mode_converges(clean_broker, tmp_path):
    path = write(
        tmp_path,
        """
        vhosts: [{name: v1, description: d, limits: {max-queues: 3}}]
        users:
          - name: po
            password: pw
            limits: {max-channels: 2}
            permissions: [{vhost: v1, write: ".*"}]
            topic_permissions: [{vhost: v1, read: "^r$"}]
        """,
    )
    result = run_cli(
        clean_broker, "sync", users_file=path, env={"PROVISIONER_BULK": "false"}
    )
    assert result.returncode == 0, result.stderr
    plan = run_cli(clean_broker, "plan", "--detailed-exitcode", users_file=path)
    assert plan.returncode == 0, plan.stdout


def test_prune_deletes_undeclared_but_spares_login_and_protected(
    clean_broker, tmp_path
):
    setup = write(
        tmp_path,
        "users: [{name: sensor-01, password: a}, {name: keepme, password: b}, {name: old, password: c}]",
    )
    assert run_cli(clean_broker, "sync", users_file=setup).returncode == 0
    pruning = write(
        tmp_path,
        """
        users: [{name: sensor-02, password: d}]
        prune: {users: true, protect: [keepme]}
        """,
        "prune.yaml",
    )
    plan = run_cli(clean_broker, "plan", users_file=pruning)
    assert "delete user 'sensor-01'" in plan.stdout
    assert "delete user 'old'" in plan.stdout
    assert "keepme" not in plan.stdout
    assert clean_broker.admin_user not in plan.stdout
    assert run_cli(clean_broker, "sync", users_file=pruning).returncode == 0
    names = {user["name"] for user in api_get(clean_broker, "users")}
    assert names == {clean_broker.admin_user, "keepme", "sensor-02"}


def test_prune_refuses_empty_file(clean_broker, tmp_path):
    path = write(tmp_path, "users: []\nprune: {users: true}\n")
    before = definitions_snapshot(clean_broker)
    result = run_cli(clean_broker, "sync", users_file=path)
    assert result.returncode == 2
    assert "allow_empty" in result.stderr
    assert definitions_snapshot(clean_broker) == before


INVALID_FILES = {
    "unknown key": (
        "users: [{name: a, password: x, colour: red}]",
        "unknown key 'colour'",
    ),
    "wrong type": ("users: [{name: a, password: x, tags: 5}]", "expected a list"),
    "yaml boolean": ("users: [{name: no, password: x}]", 'quote it: name: "no"'),
    "yaml number password": ("users: [{name: a, password: 0123}]", "quote it"),
    "duplicate": (
        "users: [{name: a, password: x}, {name: a, password: y}]",
        "duplicate name",
    ),
    "dangling vhost": (
        "users: [{name: a, password: x, permissions: [{vhost: telemetry}]}]",
        "vhost 'telemetry' is not declared",
    ),
    "bad regex": (
        "users: [{name: a, password: x, permissions: [{vhost: /, read: '(x'}]}]",
        "does not compile",
    ),
    "user limit of vhosts": (
        "users: [{name: a, password: x, limits: {max-queues: 1}}]",
        "unknown key 'max-queues'",
    ),
    "vhost limit of users": (
        "vhosts: [{name: v, limits: {max-channels: 1}}]",
        "unknown key 'max-channels'",
    ),
    "missing variable": (
        "users: [{name: a, password: '${NOT_SET_ANYWHERE}'}]",
        "NOT_SET_ANYWHERE",
    ),
    "syntax": ("users: [{name: a\n", "invalid YAML"),
}


def test_invalid_files_leave_broker_untouched(clean_broker, tmp_path):
    seed = write(tmp_path, "users: [{name: existing, password: pw}]", "seed.yaml")
    assert run_cli(clean_broker, "sync", users_file=seed).returncode == 0
    before = definitions_snapshot(clean_broker)
    for label, (text, phrase) in INVALID_FILES.items():
        path = write(tmp_path, text, f"{label.replace(' ', '-')}.yaml")
        for command in ("validate", "plan", "sync"):
            result = run_cli(clean_broker, command, users_file=path)
            assert result.returncode == 2, (label, command, result.stderr)
            assert phrase in result.stderr, (label, command, result.stderr)
            assert path.name in result.stderr, (label, result.stderr)
    assert definitions_snapshot(clean_broker) == before


def test_wrong_admin_password_fails_fast_naming_user(clean_broker, tmp_path):
    path = write(tmp_path, "users: [{name: a, password: x}]")
    result = run_cli(
        clean_broker,
        "sync",
        users_file=path,
        env={"PROVISIONER_PASSWORD": "wrong-pw-77"},
    )
    assert result.returncode == 2
    assert repr(clean_broker.admin_user) in result.stderr
    assert "PROVISIONER_USERNAME" in result.stderr
    assert "wrong-pw-77" not in result.stderr + result.stdout


def test_sentinel_password_never_printed(clean_broker, tmp_path):
    sentinel = "Sentinel-Pw-4711"
    path = write(
        tmp_path, "users: [{name: sen, password: '${SEN_PW}', tags: [management]}]"
    )
    result = run_cli(
        clean_broker,
        "sync",
        "--log-level",
        "DEBUG",
        users_file=path,
        env={"SEN_PW": sentinel},
    )
    assert result.returncode == 0, result.stderr
    stored = api_get(clean_broker, "users/sen")["password_hash"]
    output = result.stdout + result.stderr
    assert sentinel not in output
    assert stored not in output
    assert clean_broker.admin_password not in output


def test_login_without_administrator_tag_exit_2(clean_broker, tmp_path):
    viewer = write(
        tmp_path, "users: [{name: viewer, password: viewer-pw, tags: [management]}]"
    )
    assert run_cli(clean_broker, "sync", users_file=viewer).returncode == 0
    path = write(tmp_path, "users: [{name: a, password: x}]", "other.yaml")
    before = definitions_snapshot(clean_broker)
    result = run_cli(
        clean_broker,
        "sync",
        users_file=path,
        env={"PROVISIONER_USERNAME": "viewer", "PROVISIONER_PASSWORD": "viewer-pw"},
    )
    assert result.returncode == 2, result.stderr
    assert "'viewer' logged in but is not an administrator" in result.stderr
    assert "viewer-pw" not in result.stderr
    assert definitions_snapshot(clean_broker) == before


def test_file_cannot_change_login_password(clean_broker, tmp_path):
    path = write(
        tmp_path,
        f"users: [{{name: {clean_broker.admin_user}, password: other-pw-1, tags: [administrator]}}]",
    )
    before = definitions_snapshot(clean_broker)
    result = run_cli(clean_broker, "sync", users_file=path)
    assert result.returncode == 2, result.stderr
    assert "locked out" in result.stderr
    assert "other-pw-1" not in result.stderr
    assert definitions_snapshot(clean_broker) == before


def test_owned_login_and_new_vhost_converge_in_one_run(clean_broker, tmp_path):
    path = write(
        tmp_path,
        f"""
        vhosts: [{{name: nv}}]
        users:
          - name: {clean_broker.admin_user}
            password: ${{PROVISIONER_PASSWORD}}
            tags: [administrator]
            permissions: [{{vhost: /, configure: ".*", write: ".*", read: ".*"}}]
        """,
    )
    first = run_cli(clean_broker, "sync", users_file=path)
    assert first.returncode == 0, first.stderr
    plan = run_cli(clean_broker, "plan", "--detailed-exitcode", users_file=path)
    assert plan.returncode == 0, plan.stdout + plan.stderr
