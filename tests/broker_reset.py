"""Reset a shared test broker to a fresh state through the management API.

Restarting a node with wiped data takes seconds, so tests that need an
empty broker reuse one node and undo what earlier tests created: users,
vhosts, limits, topic permissions and queues in ``/``. Other objects
(policies, exchanges, global parameters) are left alone because no test of
the provisioner creates them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from tests.rabbitmq_node import RabbitNode

DEFAULT_VHOST = "/"


def _path(*segments: str) -> str:
    # Every segment is encoded, including "/", so vhost "/" becomes "%2F".
    return "/".join(quote(segment, safe="") for segment in segments)


class _Api:
    """Thin admin client that raises on any unexpected status."""

    def __init__(self, node: RabbitNode) -> None:
        self._base = node.management_url + "/api/"
        self._session = node.session()

    def get(self, *segments: str) -> Any:
        response = self._session.get(self._base + _path(*segments), timeout=10)
        response.raise_for_status()
        return response.json()

    def delete(self, *segments: str) -> None:
        response = self._session.delete(self._base + _path(*segments), timeout=10)
        if response.status_code != requests.codes.not_found:
            response.raise_for_status()

    def put(self, body: dict[str, Any], *segments: str) -> None:
        response = self._session.put(
            self._base + _path(*segments), json=body, timeout=10
        )
        response.raise_for_status()

    def post(self, body: dict[str, Any], *segments: str) -> None:
        response = self._session.post(
            self._base + _path(*segments), json=body, timeout=10
        )
        response.raise_for_status()


def reset_broker(node: RabbitNode) -> None:
    """Leave only the seeded admin, with full rights, and the vhost ``/``."""
    api = _Api(node)
    admin = node.admin_user

    # The admin is rewritten first, so a test that changed its tags cannot
    # lock the remaining steps out.
    api.put({"password": node.admin_password, "tags": "administrator"}, "users", admin)

    other_users = [user["name"] for user in api.get("users") if user["name"] != admin]
    if other_users:
        api.post({"users": other_users}, "users", "bulk-delete")

    for vhost in api.get("vhosts"):
        if vhost["name"] != DEFAULT_VHOST:
            api.delete("vhosts", vhost["name"])
    api.put({}, "vhosts", DEFAULT_VHOST)

    for limit in api.get("user-limits", admin):
        for name in limit["value"]:
            api.delete("user-limits", admin, name)
    for limit in api.get("vhost-limits", DEFAULT_VHOST):
        for name in limit["value"]:
            api.delete("vhost-limits", DEFAULT_VHOST, name)

    api.delete("topic-permissions", DEFAULT_VHOST, admin)
    api.put(
        {"configure": ".*", "write": ".*", "read": ".*"},
        "permissions",
        DEFAULT_VHOST,
        admin,
    )

    for queue in api.get("queues", DEFAULT_VHOST):
        api.delete("queues", DEFAULT_VHOST, queue["name"])
