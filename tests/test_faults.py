"""The real CLI against a broker behind a fault-injecting proxy.

Each scenario checks the exit code, the message and the broker state read
back over the API. The time each scenario took to recover is printed (run
with ``-s``) and written to ``build/fault-results.md``. These numbers are
measurements, so tests assert on them only with coarse upper bounds.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.fault_proxy import Fault, FaultProxy, Rule, wait_for
from tests.provisioner_cli import REPO, api_get, cli_env, run_cli
from tests.rabbitmq_node import RabbitNode

RESULTS_FILE = REPO / "build" / "fault-results.md"
RETRY_LOG = "retrying in"
_results: list[tuple[str, str]] = []


def record(scenario: str, outcome: str) -> None:
    """Keep one line of results for the report and print it."""
    _results.append((scenario, outcome))
    print(f"\n[fault] {scenario}: {outcome}")


@pytest.fixture(scope="module", autouse=True)
def results_file() -> Iterator[None]:
    yield
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    lines = ["| scenario | outcome |", "|---|---|"]
    lines += [f"| {name} | {outcome} |" for name, outcome in _results]
    RESULTS_FILE.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def proxy(clean_broker: RabbitNode) -> Iterator[FaultProxy]:
    with FaultProxy(clean_broker.management_port) as started:
        yield started


def through(proxy: FaultProxy, **extra: str) -> dict[str, str]:
    """CLI environment that reaches the broker only through ``proxy``."""
    return {"PROVISIONER_MANAGEMENT_URL": proxy.url, **extra}


def write_users(tmp_path: Path, count: int = 3, vhost: str = "/") -> Path:
    lines = ["vhosts:", f"  - name: {vhost}", "users:"]
    for index in range(count):
        lines += [
            f"  - name: user-{index:04d}",
            "    password: ${USER_PASSWORD}",
            "    permissions:",
            f'      - {{vhost: "{vhost}", configure: "^$", write: "^amq\\\\.topic$", read: "^$"}}',
        ]
    path = tmp_path / "users.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


PASSWORD_ENV = {"USER_PASSWORD": "fault-test-pw"}


def user_names(node: RabbitNode) -> set[str]:
    return {
        user["name"]
        for user in api_get(node, "users")
        if user["name"].startswith("user-")
    }


def granted_users(node: RabbitNode) -> set[str]:
    return {
        p["user"] for p in api_get(node, "permissions") if p["user"].startswith("user-")
    }


def start_cli(
    node: RabbitNode, path: Path, env: dict[str, str]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "provisioner", "sync", "--file", str(path)],
        env=cli_env(node, env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def warnings_with(stderr: str, phrase: str) -> list[str]:
    return [
        line for line in stderr.splitlines() if "WARNING" in line and phrase in line
    ]


# Start-up -------------------------------------------------------------------


def test_broker_down_then_up(
    proxy: FaultProxy, clean_broker: RabbitNode, tmp_path: Path
) -> None:
    path = write_users(tmp_path)
    proxy.refuse()
    process = start_cli(clean_broker, path, through(proxy, **PASSWORD_ENV))
    time.sleep(2)
    assert process.poll() is None, (
        "sync must keep waiting while connections are refused"
    )

    proxy.pass_through()
    up = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    recovery = time.monotonic() - up

    assert process.returncode == 0, stderr
    assert "waiting for the broker" in stderr
    assert user_names(clean_broker) == {"user-0000", "user-0001", "user-0002"}
    record(
        "refused for 2 s, then up",
        f"exit 0, synced {recovery:.2f} s after the port opened",
    )


def test_boot_sequence_refused_5xx_then_write_500(
    proxy: FaultProxy, clean_broker: RabbitNode, tmp_path: Path
) -> None:
    path = write_users(tmp_path)
    write_once = Rule(
        Fault.STATUS, count=1, status=500, method="POST", path_prefix="/api/definitions"
    )
    starting = Rule(Fault.STATUS, status=503)
    proxy.add(write_once)
    proxy.add(starting)
    proxy.refuse()
    started = time.monotonic()
    process = start_cli(clean_broker, path, through(proxy, **PASSWORD_ENV))

    time.sleep(1.5)
    proxy.refusing = False
    time.sleep(1.5)
    proxy.remove(starting)
    ready = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    finished = time.monotonic()

    assert process.returncode == 0, stderr
    assert user_names(clean_broker) == {"user-0000", "user-0001", "user-0002"}
    assert "HTTP 503" in stderr, "the wait must report the 503 it saw"
    retries = warnings_with(stderr, RETRY_LOG)
    assert len(retries) == 1, stderr
    assert "POST /api/definitions failed with HTTP 500" in retries[0]
    assert proxy.count("POST", "/api/definitions") == 2
    record(
        "C3 boot: refused 1.5 s, 503 for 1.5 s, first write 500",
        f"exit 0 after {finished - started:.2f} s in all, {finished - ready:.2f} s "
        "after the broker answered; the write was retried once",
    )


def test_wait_deadline_gives_exit_3(
    proxy: FaultProxy, clean_broker: RabbitNode, tmp_path: Path
) -> None:
    path = write_users(tmp_path)
    proxy.add(Rule(Fault.STATUS, status=503))
    started = time.monotonic()
    result = run_cli(
        clean_broker,
        "sync",
        users_file=path,
        env=through(proxy, PROVISIONER_WAIT_TIMEOUT="3", **PASSWORD_ENV),
    )
    elapsed = time.monotonic() - started

    assert result.returncode == 3, result.stderr
    assert f"the broker at {proxy.url} was not ready within 3 s" in result.stderr
    assert "last problem:" in result.stderr
    assert "HTTP 503" in result.stderr
    assert "PROVISIONER_WAIT_TIMEOUT" in result.stderr
    assert user_names(clean_broker) == set()
    assert elapsed < 20
    record("503 forever, wait timeout 3 s", f"exit 3 after {elapsed:.2f} s")


def test_persistent_401_gives_exit_2(
    proxy: FaultProxy, clean_broker: RabbitNode, tmp_path: Path
) -> None:
    path = write_users(tmp_path)
    started = time.monotonic()
    result = run_cli(
        clean_broker,
        "sync",
        users_file=path,
        env=through(proxy, PROVISIONER_PASSWORD="wrong-password", **PASSWORD_ENV),
    )
    elapsed = time.monotonic() - started

    assert result.returncode == 2, result.stderr
    assert f"user {clean_broker.admin_user!r}" in result.stderr
    assert "the environment variable PROVISIONER_USERNAME" in result.stderr
    assert "wrong-password" not in result.stderr + result.stdout
    assert user_names(clean_broker) == set()
    assert elapsed < 20
    record(
        "persistent 401",
        f"exit 2 after {elapsed:.2f} s (5 s grace for a seeding broker)",
    )


# Transient failures while syncing --------------------------------------------


def test_burst_of_5xx_is_retried(
    proxy: FaultProxy, clean_broker: RabbitNode, tmp_path: Path
) -> None:
    path = write_users(tmp_path)
    proxy.add(
        Rule(
            Fault.STATUS,
            count=3,
            status=503,
            method="GET",
            path_prefix="/api/definitions",
        )
    )
    started = time.monotonic()
    result = run_cli(
        clean_broker, "sync", users_file=path, env=through(proxy, **PASSWORD_ENV)
    )
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    retries = warnings_with(result.stderr, RETRY_LOG)
    assert len(retries) == 3, result.stderr
    for line in retries:
        assert "GET /api/definitions failed with HTTP 503" in line
    assert proxy.count("GET", "/api/definitions") == 4
    assert user_names(clean_broker) == {"user-0000", "user-0001", "user-0002"}
    record(
        "3 x 503 on GET /api/definitions",
        f"exit 0 after {elapsed:.2f} s, 3 retries logged",
    )


def test_hung_response_times_out_and_retries(
    proxy: FaultProxy, clean_broker: RabbitNode, tmp_path: Path
) -> None:
    path = write_users(tmp_path)
    proxy.add(Rule(Fault.HANG, count=2, method="GET", path_prefix="/api/definitions"))
    started = time.monotonic()
    result = run_cli(
        clean_broker,
        "sync",
        users_file=path,
        env=through(proxy, PROVISIONER_REQUEST_TIMEOUT="1", **PASSWORD_ENV),
    )
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    retries = warnings_with(result.stderr, "timed out after 1 s")
    assert len(retries) == 2, result.stderr
    assert user_names(clean_broker) == {"user-0000", "user-0001", "user-0002"}
    record(
        "2 hung GET /api/definitions, request timeout 1 s",
        f"exit 0 after {elapsed:.2f} s",
    )


def test_response_cut_midway_is_retried(
    proxy: FaultProxy, clean_broker: RabbitNode, tmp_path: Path
) -> None:
    path = write_users(tmp_path)
    proxy.add(
        Rule(
            Fault.CUT,
            count=2,
            cut_bytes=40,
            method="GET",
            path_prefix="/api/definitions",
        )
    )
    started = time.monotonic()
    result = run_cli(
        clean_broker, "sync", users_file=path, env=through(proxy, **PASSWORD_ENV)
    )
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert len(warnings_with(result.stderr, RETRY_LOG)) == 2, result.stderr
    assert user_names(clean_broker) == {"user-0000", "user-0001", "user-0002"}
    record("2 responses cut after 40 bytes", f"exit 0 after {elapsed:.2f} s")


@pytest.mark.parametrize("status", [404, 405])
def test_404_on_built_path_is_not_retried(
    proxy: FaultProxy, clean_broker: RabbitNode, tmp_path: Path, status: int
) -> None:
    path = write_users(tmp_path, count=1, vhost="/plant-a")
    proxy.add(
        Rule(Fault.STATUS, status=status, method="PUT", path_prefix="/api/permissions/")
    )
    result = run_cli(
        clean_broker,
        "sync",
        users_file=path,
        env=through(proxy, PROVISIONER_BULK="false", **PASSWORD_ENV),
    )

    assert result.returncode == 1, result.stderr
    assert "permission of user 'user-0000' on vhost '/plant-a'" in result.stderr
    assert (
        f"PUT /api/permissions/%2Fplant-a/user-0000 failed with HTTP {status}"
        in result.stderr
    )
    assert "if the same request fails again" in result.stderr
    assert warnings_with(result.stderr, RETRY_LOG) == []
    assert proxy.count("PUT", "/api/permissions/") == 1
    record(
        f"HTTP {status} on a permission PUT",
        "exit 1 at once, one request, object named",
    )


# Broker restarts --------------------------------------------------------------


def restart_during_sync(
    node: RabbitNode,
    proxy: FaultProxy,
    tmp_path: Path,
    env: dict[str, str],
    trigger: Any,
) -> tuple[int, str, float, float]:
    """Restart ``node`` once ``trigger()`` is true; rerun sync when the first run fails."""
    path = write_users(tmp_path, count=500)
    started = time.monotonic()
    process = start_cli(node, path, through(proxy, **PASSWORD_ENV, **env))
    assert wait_for(trigger, timeout=60), (
        "the sync never reached the point to interrupt"
    )
    node.restart()
    back = time.monotonic()
    _, stderr = process.communicate(timeout=180)
    first_rc = process.returncode
    stderr += f"\n[first run took {time.monotonic() - started:.1f} s]"
    rerun_seconds = 0.0
    if first_rc != 0:
        rerun_started = time.monotonic()
        rerun = run_cli(
            node, "sync", users_file=path, env=through(proxy, **PASSWORD_ENV, **env)
        )
        rerun_seconds = time.monotonic() - rerun_started
        assert rerun.returncode == 0, rerun.stderr
    return first_rc, stderr, back - started, rerun_seconds


def last_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    replans = len(warnings_with(stderr, "planning again"))
    took = stderr.rsplit("[", 1)[-1].rstrip("]")
    summary = errors[-1][:200] if errors else "no error"
    return f"{summary}; {replans} re-plan(s); {took}"


def assert_all_declared(node: RabbitNode) -> None:
    expected = {f"user-{index:04d}" for index in range(500)}
    assert user_names(node) == expected
    assert granted_users(node) == expected


def test_restart_during_per_object_sync(
    proxy: FaultProxy, clean_broker: RabbitNode, tmp_path: Path
) -> None:
    first_rc, stderr, restarted_at, rerun = restart_during_sync(
        clean_broker,
        proxy,
        tmp_path,
        {"PROVISIONER_BULK": "false"},
        lambda: proxy.count("PUT", "/api/users/") >= 100,
    )

    assert first_rc in (0, 1), stderr
    if first_rc == 1:
        assert "run sync again to finish the job" in stderr
    assert_all_declared(clean_broker)
    written = proxy.count("PUT", "/api/users/")
    record(
        "node restarted after 100 of 500 per-object user PUTs",
        f"first run exit {first_rc} (restart done {restarted_at:.1f} s after start), "
        f"rerun {rerun:.2f} s; {written} user PUTs in all; all 500 users present; "
        f"first run said: {last_error(stderr)}",
    )


def test_restart_during_bulk_import(
    proxy: FaultProxy, clean_broker: RabbitNode, tmp_path: Path
) -> None:
    proxy.add(
        Rule(
            Fault.DELAY,
            count=1,
            delay=2.0,
            method="POST",
            path_prefix="/api/definitions",
        )
    )
    first_rc, stderr, restarted_at, rerun = restart_during_sync(
        clean_broker,
        proxy,
        tmp_path,
        {},
        lambda: proxy.count("POST", "/api/definitions") >= 1,
    )

    assert first_rc in (0, 1), stderr
    assert_all_declared(clean_broker)
    record(
        "node restarted while the 500-user definitions import was in flight",
        f"first run exit {first_rc} (restart done {restarted_at:.1f} s after start), "
        f"rerun {rerun:.2f} s; all 500 users present; first run said: {last_error(stderr)}",
    )


def test_killed_cli_is_finished_by_next_run(
    proxy: FaultProxy, clean_broker: RabbitNode, tmp_path: Path
) -> None:
    path = write_users(tmp_path, count=500)
    env = through(proxy, PROVISIONER_BULK="false", **PASSWORD_ENV)
    process = start_cli(clean_broker, path, env)
    assert wait_for(lambda: proxy.count("PUT", "/api/users/") >= 100, timeout=60)
    process.kill()
    process.communicate(timeout=30)
    half_made = user_names(clean_broker) - granted_users(clean_broker)

    started = time.monotonic()
    rerun = run_cli(clean_broker, "sync", users_file=path, env=env)
    elapsed = time.monotonic() - started

    assert rerun.returncode == 0, rerun.stderr
    assert_all_declared(clean_broker)
    record(
        "CLI killed (SIGKILL) after 100 of 500 per-object user PUTs",
        f"{len(half_made)} users left without their permission; the next run "
        f"finished them in {elapsed:.2f} s",
    )


def test_broker_gone_mid_sync_then_back(
    proxy: FaultProxy, clean_broker: RabbitNode, tmp_path: Path
) -> None:
    path = write_users(tmp_path, count=500)
    env = through(
        proxy, PROVISIONER_BULK="false", PROVISIONER_WAIT_TIMEOUT="3", **PASSWORD_ENV
    )
    process = start_cli(clean_broker, path, env)
    assert wait_for(lambda: proxy.count("PUT", "/api/users/") >= 100, timeout=60)
    proxy.refuse()
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 3, stderr
    assert "planning again" in stderr
    assert "was not ready within 3 s" in stderr

    proxy.pass_through()
    started = time.monotonic()
    rerun = run_cli(clean_broker, "sync", users_file=path, env=env)
    elapsed = time.monotonic() - started

    assert rerun.returncode == 0, rerun.stderr
    assert_all_declared(clean_broker)
    record(
        "broker unreachable for good after 100 of 500 user PUTs, wait timeout 3 s",
        f"exit 3 after one re-plan; the next run finished in {elapsed:.2f} s",
    )


# TLS ---------------------------------------------------------------------------


@pytest.fixture
def tls_proxy(
    clean_broker: RabbitNode, tmp_path: Path
) -> Iterator[tuple[FaultProxy, Path]]:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    with FaultProxy(clean_broker.management_port, tls=context) as started:
        yield started, bundle


def test_tls_unknown_ca_is_rejected(
    tls_proxy: tuple[FaultProxy, Path], clean_broker: RabbitNode, tmp_path: Path
) -> None:
    proxy, _ = tls_proxy
    path = write_users(tmp_path)
    started = time.monotonic()
    result = run_cli(
        clean_broker, "sync", users_file=path, env=through(proxy, **PASSWORD_ENV)
    )
    elapsed = time.monotonic() - started

    assert result.returncode == 2, result.stderr
    assert "certificate failed verification" in result.stderr
    assert "PROVISIONER_CA_BUNDLE" in result.stderr
    assert user_names(clean_broker) == set()
    assert elapsed < 10, "a certificate problem must not wait for the deadline"
    record(
        "https with an unknown CA",
        f"exit 2 after {elapsed:.2f} s, names PROVISIONER_CA_BUNDLE",
    )


def test_tls_with_ca_bundle_syncs(
    tls_proxy: tuple[FaultProxy, Path], clean_broker: RabbitNode, tmp_path: Path
) -> None:
    proxy, bundle = tls_proxy
    path = write_users(tmp_path)
    result = run_cli(
        clean_broker,
        "sync",
        users_file=path,
        env=through(proxy, PROVISIONER_CA_BUNDLE=str(bundle), **PASSWORD_ENV),
    )

    assert result.returncode == 0, result.stderr
    assert user_names(clean_broker) == {"user-0000", "user-0001", "user-0002"}
    record("https with PROVISIONER_CA_BUNDLE", "exit 0")
