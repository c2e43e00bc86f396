"""Tests for verify without a broker: probe choice, report, settings and CLI errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import SecretStr

from provisioner import spec
from provisioner.errors import InvalidInput
from provisioner.mqtt_probe import Endpoint, Login, Outcome, Result
from provisioner.settings import load_settings
from provisioner.state import BrokerState, PlainPassword, StoredPassword, UserState
from provisioner.verify import (
    mqtt_username,
    render_report,
    select_users,
    verify_users,
)
from provisioner.verify_plan import (
    Action,
    Check,
    Expect,
    allowed_client_id,
    concrete_topic,
    covers,
    outside_client_id,
    plan_checks,
    wider_filter,
)

REPO = Path(__file__).resolve().parent.parent
ROOM = spec.MqttBlock(publish=["/priv/room/sample"], subscribe=["/priv/room/#"])


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


# Probe choice


def test_plan_room_client_allowed() -> None:
    checks = by_name(plan_checks("room-client", ROOM))

    assert next(iter(checks)) == "login"
    assert checks["login"].action is Action.CONNECT
    assert checks["login"].target == "room-client-verify"

    assert checks["publish"].topic == "/priv/room/sample"
    assert checks["publish"].expected is Expect.ALLOWED
    assert checks["subscribe qos0"].topic == "/priv/room/#"
    assert checks["subscribe qos0"].qos == 0
    assert checks["subscribe qos1"].qos == 1
    assert checks["subscribe qos1"].expected is Expect.ALLOWED
    assert checks["publish"].client_id == "room-client-verify"


def test_plan_room_client_refusals() -> None:
    checks = by_name(plan_checks("room-client", ROOM))
    expected = {
        "publish, sibling level": "/priv/room/sample-verify",
        "publish, parent level": "/priv/room",
        "publish, other first level": "verify-other/priv/room/sample",
        "publish, no leading slash": "priv/room/sample",
        "subscribe, sibling level": "/priv/room-verify/verify",
        "subscribe, parent level": "/priv",
        "subscribe, other first level": "verify-other/priv/room/verify",
        "subscribe, no leading slash": "priv/room/verify",
        "subscribe, wider filter": "/priv/#",
    }

    for name, topic in expected.items():
        assert checks[name].topic == topic, name
        assert checks[name].expected is Expect.REFUSED, name


def test_plan_foreign_client_id() -> None:
    checks = by_name(plan_checks("room-client", ROOM))
    check = checks["client id outside client_ids, subscribe /priv/room/#"]

    assert check.action is Action.SUBSCRIBE
    assert check.client_id == "verify-outside"
    assert check.target == "verify-outside"
    assert check.expected is Expect.REFUSED


def test_plan_skips_covered_neighbours() -> None:
    block = spec.MqttBlock(publish=["#"], subscribe=["#"])
    checks = plan_checks("u", block)

    refused = [c.name for c in checks if c.expected is Expect.REFUSED]
    # Every topic is granted, so only the foreign client id can be refused.
    assert refused == ["client id outside client_ids, subscribe #"]


def test_plan_hash_grant_neighbours() -> None:
    block = spec.MqttBlock(publish=["a/#"])
    checks = plan_checks("u", block)

    published = {c.name: c.topic for c in checks if c.action is Action.PUBLISH}
    assert published == {
        "publish": "a/verify",
        "publish, sibling level": "a-verify/verify",
        "publish, other first level": "verify-other/verify",
    }


def test_plan_publish_only_user() -> None:
    block = spec.MqttBlock(publish=["t/x"])
    checks = by_name(plan_checks("u", block))

    assert checks["subscribe, none granted"].topic == "t/x"
    assert checks["subscribe, none granted"].expected is Expect.REFUSED
    assert not any(name.startswith("client id") for name in checks)


def test_plan_subscribe_only_user() -> None:
    block = spec.MqttBlock(subscribe=["t/+"])
    checks = by_name(plan_checks("u", block))

    assert checks["publish, none granted"].topic == "t/verify"
    assert checks["publish, none granted"].expected is Expect.REFUSED


def test_plan_expands_variables() -> None:
    block = spec.MqttBlock(
        client_ids=["dev-7"],
        publish=["d/{username}/up"],
        subscribe=["d/{client_id}/down"],
    )
    checks = by_name(plan_checks("u7", block))

    assert checks["publish"].topic == "d/u7/up"
    assert checks["subscribe qos1"].topic == "d/dev-7/down"
    assert checks["subscribe qos1"].client_id == "dev-7"
    outsider = next(c for c in checks.values() if c.name.startswith("client id"))
    assert outsider.topic == f"d/{outsider.client_id}/down"


def test_plan_no_duplicates() -> None:
    block = spec.MqttBlock(publish=["a/b", "a/c"], subscribe=["a/b", "a/c"])
    checks = plan_checks("u", block)
    keys = [(c.action, c.topic, c.client_id, c.qos) for c in checks]

    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    ("granted", "requested", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/+", True),
        ("a/+", "a/#", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/#", "a/+/#", True),
        ("a/+/#", "a/#", False),
        ("a/+/#", "a/b", True),
        ("+/#", "#", True),
        ("/+/#", "/#", True),
        ("/priv/room/#", "/priv/room", True),
        ("/priv/room/#", "/priv", False),
        ("/priv/room/#", "priv/room/x", False),
        ("#", "anything/at/all", True),
        ("a", "a/b", False),
        ("a/b", "a", False),
    ],
)
def test_covers(granted: str, requested: str, expected: bool) -> None:
    assert covers(granted, requested) is expected


@pytest.mark.parametrize(
    ("topic_filter", "wider"),
    [
        ("/priv/room/sample", "/priv/room/#"),
        ("/priv/room/#", "/priv/#"),
        ("a/+/c", "a/+/#"),
        ("a", "#"),
        ("a/#", "#"),
        ("#", None),
    ],
)
def test_wider_filter(topic_filter: str, wider: str | None) -> None:
    assert wider_filter(topic_filter) == wider


def test_concrete_topic_fills_wildcards() -> None:
    assert concrete_topic("a/+/c/#") == "a/verify/c/verify"


def test_allowed_client_id_prefers_prefix() -> None:
    assert allowed_client_id(["dev", "dev-*"]) == "dev-verify"
    assert allowed_client_id(["dev-1", "dev-2"]) == "dev-1"


@pytest.mark.parametrize(
    "patterns",
    [["room-client", "room-client-*"], ["v*"], ["v*", "0*", "~*"], ["verify-outside"]],
)
def test_outside_client_id_not_allowed(patterns: list[str]) -> None:
    client_id = outside_client_id(patterns)

    for pattern in patterns:
        if pattern.endswith("*"):
            assert not client_id.startswith(pattern[:-1])
        else:
            assert client_id != pattern


@pytest.mark.parametrize(
    ("username", "vhost", "expected"),
    [
        ("room-client", "/", "room-client"),
        ("plant", "/plant-a", "/plant-a:plant"),
        ("a:b", "/", "/:a:b"),
    ],
)
def test_mqtt_username(username: str, vhost: str, expected: str) -> None:
    assert mqtt_username(username, vhost) == expected


# Running and the report


def users_and_state() -> tuple[list[spec.User], BrokerState]:
    users = [
        spec.User(name="room-client", password=SecretStr("pw-one"), mqtt=ROOM),
        spec.User(
            name="hashed",
            password_hash=SecretStr("x"),
            mqtt=spec.MqttBlock(publish=["h"]),
        ),
    ]
    state = BrokerState()
    state.users["room-client"] = UserState(
        "room-client", frozenset(), PlainPassword(SecretStr("pw-one"))
    )
    state.users["hashed"] = UserState("hashed", frozenset(), StoredPassword("x"))
    return users, state


ENDPOINT = Endpoint("127.0.0.1", 1, "/ws", tls=False, ca_bundle=None, timeout=1.0)


def obedient_probe(endpoint: Endpoint, check: Check, login: Login) -> Result:
    assert login.password == "pw-one"
    assert login.username == "room-client"
    outcome = Outcome.ALLOWED if check.expected is Expect.ALLOWED else Outcome.REFUSED
    return Result(outcome, "fake")


def test_verify_users_all_ok() -> None:
    users, state = users_and_state()
    report = verify_users(users, state, ENDPOINT, probe=obedient_probe)

    assert report.rows
    assert report.surprises == []
    assert report.skipped == [
        ("hashed", "declared with password_hash only, so its password is unknown")
    ]
    text = render_report(report)
    assert text.splitlines()[0].split()[:3] == ["user", "check", "topic/client"]
    assert "skipped 'hashed'" in text
    assert text.endswith("14 checks, all as declared.")
    assert "pw-one" not in text


def test_verify_users_reports_surprise() -> None:
    def lenient_probe(endpoint: Endpoint, check: Check, login: Login) -> Result:
        return Result(Outcome.ALLOWED, "PUBACK")

    users, state = users_and_state()
    report = verify_users(users, state, ENDPOINT, probe=lenient_probe)
    text = render_report(report)

    assert len(report.surprises) == 10
    assert "SURPRISE" in text
    assert (
        "surprise: user 'room-client' (client id 'room-client-verify') may publish "
        "'/priv/room/sample-verify' (publish, sibling level), but the users file "
        "says refused" in text
    )
    assert text.endswith(
        "14 checks, 10 surprises: the broker does not enforce the users file."
    )


def test_verify_connect_failure_reported() -> None:
    def failing_probe(endpoint: Endpoint, check: Check, login: Login) -> Result:
        return Result(Outcome.CONNECT_FAILED, "CONNACK Not authorized")

    users, state = users_and_state()
    report = verify_users(users[:1], state, ENDPOINT, probe=failing_probe)

    assert [row.check.name for row in report.rows] == ["login"]
    assert len(report.surprises) == 1
    assert report.skipped == [
        ("room-client", "the login failed, so no other check ran")
    ]
    assert "could not connect" in render_report(report)


def test_select_users_errors() -> None:
    users, _ = users_and_state()
    plain = spec.User(name="plain", password=SecretStr("p"))

    with pytest.raises(InvalidInput, match="'nobody' is not declared"):
        select_users([*users, plain], ["nobody"])
    with pytest.raises(InvalidInput, match="'plain' has no mqtt block"):
        select_users([*users, plain], ["plain"])
    with pytest.raises(InvalidInput, match="no user has an mqtt block"):
        select_users([plain], None)
    assert [u.name for u in select_users([*users, plain], None)] == [
        "room-client",
        "hashed",
    ]


# Settings


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:15675/ws",
        "ws:///ws",
        "ws://user:pw@127.0.0.1:15675/ws",
        "ws://127.0.0.1:99999/ws",
        "ws://127.0.0.1:15675/ws?x=1",
    ],
)
def test_mqtt_url_rejected(url: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        load_settings({"mqtt_url": url})

    assert "--mqtt-url" in str(raised.value)
    assert "pw@" not in str(raised.value)


def test_mqtt_url_default_and_wss() -> None:
    assert load_settings({}).mqtt_url == "ws://127.0.0.1:15675/ws"
    settings = load_settings({"mqtt_url": "wss://mq.example.org/ws"})
    endpoint = Endpoint.from_url(settings.mqtt_url, ca_bundle=None, timeout=2)

    assert endpoint.tls is True
    assert endpoint.port == 443
    assert endpoint.path == "/ws"


# The command


def run_verify(
    args: list[str], extra_path: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    paths = [str(extra_path)] if extra_path else []
    environment = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": ":".join([*paths, str(REPO)]),
        "ROOM_CLIENT_PASSWORD": "pw-room",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "provisioner", "verify", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


def test_cli_without_paho_exits_2(tmp_path: Path) -> None:
    # A package named paho that fails to import hides the installed one.
    fake = tmp_path / "paho"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('hidden for the test')\n")

    result = run_verify(["--file", str(REPO / "users.yaml")], extra_path=tmp_path)

    assert result.returncode == 2
    assert "pip install 'miyako-provisioner[mqtt]'" in result.stderr


def test_cli_closed_port_exits_3() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The socket is closed again, so nothing listens on the port.

    result = run_verify(
        ["--file", str(REPO / "users.yaml"), "--mqtt-url", f"ws://127.0.0.1:{port}/ws"]
    )

    assert result.returncode == 3
    assert "not reachable" in result.stderr
    assert "pw-room" not in result.stdout + result.stderr


def test_cli_bad_timeout_exits_2() -> None:
    result = run_verify(["--file", str(REPO / "users.yaml"), "--timeout", "0"])

    assert result.returncode == 2
    assert "must be more than 0 seconds" in result.stderr


def test_cli_invalid_users_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            users:
              - name: u
                password: ${ROOM_CLIENT_PASSWORD}
                mqtt: {publish: ["a/b#"]}
            """
        )
    )

    result = run_verify(["--file", str(path)])

    assert result.returncode == 2
    assert "'#' must be a whole level" in result.stderr


def test_cli_only_hashed_users_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            users:
              - name: hashed
                password_hash: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                mqtt: {publish: [a/b]}
            """
        )
    )

    result = run_verify(["--file", str(path)])

    assert result.returncode == 2
    assert "skipped 'hashed'" in result.stdout
    assert "declared with password_hash only" in result.stderr
