"""The objects every benchmark row provisions: N users with their grants.

Each user has a password, one permission on the vhost ``/`` and one topic
permission on ``amq.topic``, which is what an MQTT device account needs.
The same objects are written as ``users.yaml`` for the provisioner, as a
definitions document for the broker's own import, and as per-object
request bodies for the PUT-per-object comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.passwords import HashingAlgorithm, hash_password

VHOST = "/"
EXCHANGE = "amq.topic"
PREFIX = "bench-device-"


@dataclass(frozen=True)
class BenchUser:
    """One device account of the workload."""

    name: str
    password: str
    topic_write: str

    @property
    def permission(self) -> dict[str, str]:
        """Configure, write and read regexes on the vhost ``/``."""
        return {"configure": "^$", "write": "^amq\\.topic$", "read": "^$"}

    @property
    def topic_permission(self) -> dict[str, str]:
        """Topic write and read regexes on ``amq.topic``."""
        return {"exchange": EXCHANGE, "write": self.topic_write, "read": "^$"}


def make_users(count: int, *, generation: int = 0) -> list[BenchUser]:
    """Return ``count`` users; a new ``generation`` changes every password."""
    return [
        BenchUser(
            name=f"{PREFIX}{index:05d}",
            password=f"pw-{generation}-{index:05d}-bench",
            topic_write=f"^devices\\.{index:05d}\\..+$",
        )
        for index in range(count)
    ]


def changed_users(users: list[BenchUser], fraction: float) -> list[BenchUser]:
    """Return ``users`` with the password of every ``1/fraction``-th user changed."""
    step = max(1, round(1 / fraction))
    return [
        BenchUser(u.name, u.password + "-rotated", u.topic_write)
        if index % step == 0
        else u
        for index, u in enumerate(users)
    ]


def write_users_file(path: Path, users: list[BenchUser]) -> None:
    """Write ``users`` as block-style ``users.yaml``, as an operator would."""
    lines = ["users:"]
    for u in users:
        p, t = u.permission, u.topic_permission
        lines += [
            f"  - name: {u.name}",
            f"    password: {u.password}",
            "    permissions:",
            f"      - {{vhost: {VHOST}, configure: {_quote(p['configure'])}, "
            f"write: {_quote(p['write'])}, read: {_quote(p['read'])}}}",
            "    topic_permissions:",
            f"      - {{vhost: {VHOST}, exchange: {EXCHANGE}, "
            f"write: {_quote(t['write'])}, read: {_quote(t['read'])}}}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _quote(regex: str) -> str:
    # Single quotes keep backslashes as they are in YAML.
    return "'" + regex.replace("'", "''") + "'"


def definitions_document(users: list[BenchUser]) -> dict[str, Any]:
    """Return the broker definitions for ``users``, with pre-hashed passwords."""
    algorithm = HashingAlgorithm.SHA256
    return {
        "users": [
            {
                "name": u.name,
                "password_hash": hash_password(u.password, algorithm),
                "hashing_algorithm": algorithm.value,
                "tags": [],
            }
            for u in users
        ],
        "permissions": [
            {"user": u.name, "vhost": VHOST, **u.permission} for u in users
        ],
        "topic_permissions": [
            {"user": u.name, "vhost": VHOST, **u.topic_permission} for u in users
        ],
    }
