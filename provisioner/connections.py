"""Close the open connections of users whose password changed or who were deleted.

The broker checks a password only when a client connects, so a client that
logged in with the old password keeps its connection, and can keep
publishing, after a rotation (measured with MQTT over WebSocket on 3.10.8
and 4.0.5). Closing those connections makes the old password stop working at
once, and clients that have the new password reconnect. Deleting a user
already closed its connections on both versions, so closing them here again
only covers brokers that behave otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from provisioner.client import ManagementClient, api_path
from provisioner.plan import Action, Change, Kind

log = logging.getLogger(__name__)

CLOSE_REASON = "password changed by provisioner"


def users_to_disconnect(changes: Iterable[Change]) -> set[str]:
    """Return the users whose password changes or who are deleted by ``changes``."""
    users = set()
    for change in changes:
        if change.kind != Kind.USER:
            continue
        if change.action == Action.DELETE or (
            change.action == Action.UPDATE and "password" in change.fields
        ):
            users.add(change.target[0])
    return users


def close_user_connections(client: ManagementClient, users: set[str]) -> int:
    """Close every connection of ``users``; return how many were closed.

    One request lists all connections, so the cost does not grow with the
    number of rotated users. A connection that is already gone counts as done.
    """
    if not users:
        return 0
    listed = client.get(api_path("connections") + "?columns=name,user")
    found = [(e["name"], e["user"]) for e in listed if e.get("user") in users]
    for name, user in found:
        client.delete(api_path("connections", name), headers={"X-Reason": CLOSE_REASON})
        log.info("closed connection %r of user %r", name, user)
    log.info(
        "closed %d connection(s) of %d user(s) with a changed password or deleted",
        len(found),
        len(users),
    )
    return len(found)
