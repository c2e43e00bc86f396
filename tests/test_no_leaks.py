"""No password, hash or Basic credential reaches any output, even on failure."""

from __future__ import annotations

import base64
import textwrap
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import requests

from provisioner import cli
from provisioner.client import ManagementClient
from tests.provisioner_cli import admin_session, api_get, run_cli

SENTINEL = "Sentinel-User-Pw-7f3a9c"
ADMIN_USER = "leak-admin"
ADMIN_SENTINEL = "Sentinel-Admin-Pw-51b2e8"
FILE_SENTINEL = "Sentinel-File-Pw-c0ffee"

NO_BROKER = SimpleNamespace(
    management_url="http://127.0.0.1:9", admin_user="ops", admin_password="unused"
)

USERS = """
users:
  - name: leaky
    password: ${LEAKY_PASSWORD}
    tags: [management]
    permissions: [{vhost: /, configure: ".*", write: ".*", read: ".*"}]
  - name: filed
    password_file: filed.secret
  - name: leak-admin
    password: ${ADMIN_PASSWORD}
    tags: [administrator]
    permissions: [{vhost: /, configure: ".*", write: ".*", read: ".*"}]
"""


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def stored_hash(node, user: str) -> str:
    return api_get(node, "users/" + quote(user, safe=""))["password_hash"]


def forbidden_values(node) -> list[str]:
    return [
        SENTINEL,
        ADMIN_SENTINEL,
        FILE_SENTINEL,
        basic("leaky", SENTINEL),
        basic(ADMIN_USER, ADMIN_SENTINEL),
        stored_hash(node, "leaky"),
        stored_hash(node, "filed"),
        stored_hash(node, ADMIN_USER),
    ]


def assert_clean(outputs: list[str], forbidden: list[str]) -> None:
    everything = "\n".join(outputs)
    for value in forbidden:
        assert value not in everything


@pytest.fixture
def leak_setup(clean_broker, tmp_path):
    response = admin_session(clean_broker).put(
        f"{clean_broker.management_url}/api/users/{ADMIN_USER}",
        json={"password": ADMIN_SENTINEL, "tags": "administrator"},
        timeout=10,
    )
    assert response.status_code in (201, 204)
    path = tmp_path / "users.yaml"
    path.write_text(textwrap.dedent(USERS), encoding="utf-8")
    (tmp_path / "filed.secret").write_text(FILE_SENTINEL + "\n")
    env = {
        "PROVISIONER_USERNAME": ADMIN_USER,
        "PROVISIONER_PASSWORD": ADMIN_SENTINEL,
        "LEAKY_PASSWORD": SENTINEL,
        "ADMIN_PASSWORD": ADMIN_SENTINEL,
        "PROVISIONER_LOG_LEVEL": "DEBUG",
    }
    return clean_broker, path, env


def test_sync_debug_output_has_no_secret(leak_setup):
    node, path, env = leak_setup
    outputs = []
    for command in (["sync"], ["plan"], ["sync", "--close-connections"], ["validate"]):
        result = run_cli(node, *command, users_file=path, env=env)
        assert result.returncode == 0, result.stderr
        outputs += [result.stdout, result.stderr]
    json_run = run_cli(
        node, "sync", users_file=path, env={**env, "PROVISIONER_LOG_FORMAT": "json"}
    )
    outputs += [json_run.stdout, json_run.stderr]
    assert "DEBUG" in outputs[1]
    assert_clean(outputs, forbidden_values(node))


def test_rotation_output_has_no_secret(leak_setup):
    node, path, env = leak_setup
    first = run_cli(node, "sync", users_file=path, env=env)
    assert first.returncode == 0, first.stderr
    old_hash = stored_hash(node, "leaky")
    rotated_env = {**env, "LEAKY_PASSWORD": SENTINEL + "-2"}
    second = run_cli(
        node, "sync", "--close-connections", users_file=path, env=rotated_env
    )
    assert second.returncode == 0, second.stderr
    forbidden = [*forbidden_values(node), old_hash, SENTINEL + "-2"]
    assert_clean([first.stdout, first.stderr, second.stdout, second.stderr], forbidden)


def test_unreachable_broker_output_has_no_secret(leak_setup):
    node, path, env = leak_setup
    first = run_cli(node, "sync", users_file=path, env=env)
    assert first.returncode == 0, first.stderr
    closed = {
        **env,
        "PROVISIONER_MANAGEMENT_URL": "http://127.0.0.1:9",
        "PROVISIONER_WAIT_TIMEOUT": "2",
    }
    failed = run_cli(node, "sync", users_file=path, env=closed)
    assert failed.returncode == 3
    assert_clean([failed.stdout, failed.stderr], forbidden_values(node))


def test_failure_after_wait_has_no_secret(leak_setup, monkeypatch, capsys):
    """The connection drops after the broker was found ready: retries, then exit 1."""
    node, path, env = leak_setup
    first = run_cli(node, "sync", users_file=path, env=env)
    assert first.returncode == 0, first.stderr
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LEAKY_PASSWORD", SENTINEL + "-2")
    monkeypatch.setenv("PROVISIONER_MANAGEMENT_URL", node.management_url)
    fast_retries = {"session": None, "attempts": 2, "max_delay": 0.05}
    monkeypatch.setattr(ManagementClient.__init__, "__kwdefaults__", fast_retries)
    original = requests.Session.request

    def drop_writes(self, method, url, *args, **kwargs):
        if method != "GET":
            raise requests.ConnectionError(
                f"connection to {url} dropped; auth {basic(ADMIN_USER, ADMIN_SENTINEL)}"
            )
        return original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", drop_writes)
    code = cli.main(["sync", "--file", str(path)])
    captured = capsys.readouterr()
    assert code == 1
    assert "retrying" in captured.err
    assert "run sync again" in captured.err
    monkeypatch.undo()
    forbidden = [*forbidden_values(node), SENTINEL + "-2"]
    assert_clean([captured.out, captured.err], forbidden)


def test_crash_traceback_has_no_secret(leak_setup, monkeypatch, capsys):
    """An unexpected exception whose message carries secrets prints a masked traceback."""
    node, path, env = leak_setup
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PROVISIONER_MANAGEMENT_URL", node.management_url)
    admin_hash = stored_hash(node, ADMIN_USER)

    def crash(client, changes, live, **kwargs):
        raise RuntimeError(
            f"bug with {SENTINEL} {ADMIN_SENTINEL} {admin_hash} "
            f"{basic(ADMIN_USER, ADMIN_SENTINEL)}"
        )

    monkeypatch.setattr("provisioner.runner.apply_plan", crash)
    code = cli.main(["sync", "--file", str(path)])
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" in captured.err
    assert "RuntimeError" in captured.err
    assert_clean(
        [captured.out, captured.err],
        [SENTINEL, ADMIN_SENTINEL, admin_hash, basic(ADMIN_USER, ADMIN_SENTINEL)],
    )


def test_url_with_credentials_not_echoed(tmp_path):
    path = tmp_path / "users.yaml"
    path.write_text("users: []\n")
    url = f"http://ops:{SENTINEL}@127.0.0.1:9"
    for flags, env in (
        (["--management-url", url], {}),
        ([], {"PROVISIONER_MANAGEMENT_URL": url}),
    ):
        result = run_cli(NO_BROKER, "plan", *flags, users_file=path, env=env)
        assert result.returncode == 2
        assert "credentials" in result.stderr
        assert SENTINEL not in result.stdout + result.stderr
        assert "ops:" not in result.stderr


MALFORMED_SECRETS = [
    f'password: !!binary "{SENTINEL}@@"',
    f"password: !!timestamp {SENTINEL}",
    f"password: !!float {SENTINEL}",
    f"password: !!python/name:{SENTINEL}",
    f"password: !!int {SENTINEL}",
    f"password: [{SENTINEL}]",
    f"password: {{a: {SENTINEL}}}",
    f"password_hash: !!float {SENTINEL}",
    f"password_hash: {SENTINEL}",
    f'password: "{SENTINEL}"\n    pasword: "{SENTINEL}"',
    f'password: "{SENTINEL}"\n    password_hash: "{SENTINEL}"',
]


@pytest.mark.parametrize("source", MALFORMED_SECRETS)
def test_malformed_secret_not_echoed(tmp_path, source):
    path = tmp_path / "users.yaml"
    path.write_text(f"users:\n  - name: u1\n    {source}\n")
    result = run_cli(NO_BROKER, "validate", users_file=path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert SENTINEL.lower() not in (result.stdout + result.stderr).lower()
