"""Export the live broker to users.yaml and sync it back without changes."""

from __future__ import annotations

import stat
from urllib.parse import quote

import yaml

from provisioner.export import document_from_state, render
from provisioner.loader import load_text
from provisioner.passwords import HashingAlgorithm, hash_password
from provisioner.state import (
    Access,
    BrokerState,
    StoredPassword,
    TopicAccess,
    UserState,
    VhostState,
)
from provisioner.validate import validate_document
from tests.provisioner_cli import admin_session, run_cli

AWKWARD = ["no", "yes", "0123", "1e3", "null", "a/b@c:d#e%f", "ñandú-密码", "${HOME}"]


def put(node, path, body):
    response = admin_session(node).put(
        f"{node.management_url}/api/{path}", json=body, timeout=10
    )
    assert response.status_code in (201, 204), response.text


def seed_awkward_broker(node):
    for name in AWKWARD:
        put(node, "vhosts/" + quote("v-" + name, safe=""), {"description": name})
        put(
            node,
            "users/" + quote(name, safe=""),
            {"password": "pw-" + name, "tags": "management"},
        )
        path = quote("v-" + name, safe="") + "/" + quote(name, safe="")
        put(
            node,
            "permissions/" + path,
            {"configure": "^$", "write": name, "read": ".*"},
        )
        put(
            node,
            "topic-permissions/" + path,
            {"exchange": "amq.topic", "write": "^a\\..*$", "read": ""},
        )
    put(node, "user-limits/no/max-connections", {"value": 3})
    put(node, "vhost-limits/" + quote("v-1e3", safe="") + "/max-queues", {"value": 10})


def test_export_then_sync_is_noop(clean_broker, tmp_path):
    seed_awkward_broker(clean_broker)
    output = tmp_path / "exported.yaml"
    output.write_text("old content\n")
    output.chmod(0o644)

    exported = run_cli(clean_broker, "export", "-o", str(output))
    assert exported.returncode == 0, exported.stderr
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert "0600" in exported.stderr
    assert "hashes" in exported.stderr
    assert exported.stdout == ""

    text = output.read_text(encoding="utf-8")
    for name in AWKWARD:
        assert name.replace("${", "$${") in text

    plan = run_cli(clean_broker, "plan", "--detailed-exitcode", users_file=output)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "No changes" in plan.stdout

    synced = run_cli(clean_broker, "sync", "--log-level", "DEBUG", users_file=output)
    assert synced.returncode == 0, synced.stderr
    assert "No changes" in synced.stdout


def test_export_to_stdout_warns(clean_broker):
    exported = run_cli(clean_broker, "export")
    assert exported.returncode == 0, exported.stderr
    assert "hashes" in exported.stderr
    document = yaml.safe_load(exported.stdout)
    names = [user["name"] for user in document["users"]]
    assert names == [clean_broker.admin_user]
    assert document["prune"] == {"users": False, "vhosts": False}


def test_export_never_logs_hashes(clean_broker, tmp_path):
    seed_awkward_broker(clean_broker)
    output = tmp_path / "exported.yaml"
    exported = run_cli(
        clean_broker, "export", "-o", str(output), "--log-level", "DEBUG"
    )
    assert exported.returncode == 0, exported.stderr
    document = yaml.safe_load(output.read_text(encoding="utf-8"))
    for user in document["users"]:
        assert user["password_hash"] not in exported.stderr


def awkward_state() -> BrokerState:
    live = BrokerState()
    for name in AWKWARD:
        live.vhosts[name] = VhostState(name, name, {"max-queues": 5})
        algorithm = HashingAlgorithm.SHA512 if name == "no" else HashingAlgorithm.SHA256
        live.users[name] = UserState(
            name,
            frozenset({"management", "yes"}),
            StoredPassword(hash_password("x", algorithm), algorithm),
            {"max-channels": -1},
        )
        live.permissions[(name, name)] = Access(name, "", "0123")
        live.topic_permissions[(name, name, "amq.topic")] = TopicAccess("no", "1e3")
    return live


def test_export_round_trips_awkward_names(tmp_path):
    live = awkward_state()
    text = render(document_from_state(live))
    parsed = validate_document(load_text(text, "export.yaml"), {}, base_dir=tmp_path)
    assert [v.name for v in parsed.vhosts] == sorted(AWKWARD)
    assert [u.name for u in parsed.users] == sorted(AWKWARD)
    for user in parsed.users:
        assert user.permissions[0].write == ""
        assert user.permissions[0].read == "0123"
        assert user.topic_permissions[0].read == "1e3"
        assert set(user.tags) == {"management", "yes"}
    no_user = next(u for u in parsed.users if u.name == "no")
    assert no_user.hashing_algorithm == "sha512"


def test_export_skips_passwordless_user(tmp_path, caplog):
    live = BrokerState()
    live.users["cert-only"] = UserState("cert-only", frozenset(), None)
    with caplog.at_level("WARNING"):
        document = document_from_state(live)
    assert document["users"] == []
    assert "cert-only" in caplog.text
