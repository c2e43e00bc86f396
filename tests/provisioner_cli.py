"""Run the real CLI as a subprocess against a throwaway node, as operators do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent


def cli_env(node: Any, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the CLI: the node's URL and admin login, nothing inherited."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(REPO),
        "PROVISIONER_MANAGEMENT_URL": node.management_url,
        "PROVISIONER_USERNAME": node.admin_user,
        "PROVISIONER_PASSWORD": node.admin_password,
        "PROVISIONER_WAIT_TIMEOUT": "30",
    }
    env.update(extra or {})
    return env


def run_cli(
    node: Any,
    *args: str,
    users_file: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m provisioner ARGS`` and return the finished process."""
    command = [sys.executable, "-m", "provisioner", *args]
    if users_file is not None:
        command += ["--file", str(users_file)]
    return subprocess.run(
        command,
        env=cli_env(node, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def admin_session(node: Any) -> requests.Session:
    """A requests session logged in as the node's admin."""
    session = requests.Session()
    session.auth = (node.admin_user, node.admin_password)
    session.trust_env = False
    return session


def api_get(node: Any, path: str) -> Any:
    """GET ``/api/<path>`` as admin and return the JSON body."""
    response = admin_session(node).get(f"{node.management_url}/api/{path}", timeout=10)
    response.raise_for_status()
    return response.json()


def definitions_snapshot(node: Any) -> dict[str, Any]:
    """The parts of the definitions the provisioner manages, for before/after checks."""
    body = api_get(node, "definitions")
    vhosts = api_get(node, "vhosts?columns=name,description")
    return {
        "users": sorted(body["users"], key=lambda u: u["name"]),
        "vhosts": sorted(vhosts, key=lambda v: v["name"]),
        "permissions": sorted(
            body["permissions"], key=lambda p: (p["vhost"], p["user"])
        ),
        "topic_permissions": sorted(
            body["topic_permissions"],
            key=lambda p: (p["vhost"], p["user"], p["exchange"]),
        ),
        "parameters": body.get("parameters", []),
    }


def write_mutating_requests(output: str) -> list[str]:
    """Return the DEBUG log lines of requests that change the broker."""
    return [
        line
        for line in output.splitlines()
        if "provisioner.client" in line
        and any(f" {m} /api" in line for m in ("PUT", "POST", "DELETE"))
    ]
