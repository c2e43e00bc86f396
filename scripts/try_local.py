"""Provision the example users.yaml into a throwaway local RabbitMQ node.

Starts a private node on free loopback ports (Debian's rabbitmq-server, run
as root), runs `provisioner sync` and then `provisioner plan` with the
example file and demo passwords, prints what the broker now holds, and
stops the node. With --keep it prints the settings to use the node from
another shell and keeps it running until Ctrl-C. With
PROVISIONER_MANAGEMENT_URL set, it uses that broker and starts nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.rabbitmq_node import RabbitNode  # noqa: E402

DEMO_PASSWORDS = {"ROOM_CLIENT_PASSWORD": "demo-room-client"}


def run(command: list[str], env: dict[str, str]) -> int:
    print("$ provisioner " + " ".join(command), flush=True)
    return subprocess.call(
        [sys.executable, "-m", "provisioner", *command], env=env, cwd=REPO
    )


def provision(env: dict[str, str]) -> int:
    env = {**env, **{k: v for k, v in DEMO_PASSWORDS.items() if k not in env}}
    env["PYTHONPATH"] = str(REPO)
    env.setdefault("PROVISIONER_USERS_FILE", str(REPO / "users.yaml"))
    status = run(["sync"], env)
    if status != 0:
        return status
    return run(["plan", "--detailed-exitcode"], env)


def keep_running(node: RabbitNode) -> None:
    print("\nThe node keeps running. In another shell:")
    print(f"  export PROVISIONER_MANAGEMENT_URL={node.management_url}")
    print(f"  export PROVISIONER_USERNAME={node.admin_user}")
    print(f"  export PROVISIONER_PASSWORD={node.admin_password}")
    print(f"  export PROVISIONER_MQTT_URL={node.web_mqtt_url}")
    for name, value in DEMO_PASSWORDS.items():
        print(f"  export {name}={value}")
    print("Press Ctrl-C to stop it.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print()


def main() -> int:
    keep = "--keep" in sys.argv[1:]
    if os.environ.get("PROVISIONER_MANAGEMENT_URL"):
        return provision(dict(os.environ))
    print("starting a throwaway RabbitMQ node on free loopback ports...", flush=True)
    with RabbitNode(name_prefix="try") as node:
        env = dict(os.environ)
        env["PROVISIONER_MANAGEMENT_URL"] = node.management_url
        env["PROVISIONER_USERNAME"] = node.admin_user
        env["PROVISIONER_PASSWORD"] = node.admin_password
        status = provision(env)
        users = (
            node.session().get(f"{node.management_url}/api/users", timeout=10).json()
        )
        summary = [{"name": u["name"], "tags": u["tags"]} for u in users]
        print("users on the node:", json.dumps(summary))
        print(f"RabbitMQ {node.version} at {node.management_url}")
        if keep:
            keep_running(node)
        print("stopping the node")
    return status


if __name__ == "__main__":
    sys.exit(main())
