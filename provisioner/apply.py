"""Carry out a plan against the broker.

Creates and updates go out as ``POST /api/definitions`` requests of at most
1,000 users each (bulk mode, the default). The broker merges them without
deleting anything. Passwords are hashed locally first, so no request carries
a clear-text password. What
the definitions format cannot express (clearing a limit, deleting a grant or
a vhost, vhost limits) goes out as one request per object, and user deletions
as ``POST /api/users/bulk-delete``. Every request is idempotent, and the plan
is recomputed from the live state on each run, so a run that fails part way
leaves the next run able to finish the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from provisioner import redact
from provisioner.client import ManagementClient, api_path
from provisioner.errors import (
    ApplyFailed,
    BrokerError,
    BrokerUnavailable,
    RequestRejected,
)
from provisioner.passwords import hash_password
from provisioner.plan import Action, Change, Kind
from provisioner.state import (
    Access,
    BrokerState,
    PlainPassword,
    StoredPassword,
    TopicAccess,
    UserState,
    VhostState,
)

log = logging.getLogger(__name__)

# Users per definitions request. RabbitMQ 3.10.8 on 2 cores imports about
# 1,000 users with two grants each per second, so one chunk stays well
# inside the default 10 s request timeout, and a failed request loses the
# progress of one chunk at most.
IMPORT_CHUNK_USERS = 1000


@dataclass
class ApplyResult:
    """Changes applied, and the new login password if our own account changed."""

    applied: list[Change] = field(default_factory=list)


def apply_plan(
    client: ManagementClient,
    changes: list[Change],
    live: BrokerState,
    *,
    login: str,
    bulk: bool = True,
) -> ApplyResult:
    """Apply ``changes`` in order; raise ApplyFailed saying what is known."""
    result = ApplyResult()
    own, rest = _split_own_password(changes, login)
    # Partitioned in one pass: a membership test against the batch list
    # would compare every pair of changes, seconds at 5,000 users.
    batch = [c for c in rest if bulk and _bulk_capable(c)]
    singles = [c for c in rest if not (bulk and _bulk_capable(c))]
    # What the failing request was for, so the error names the object and
    # not only the encoded path.
    step = f"import {len(batch)} changes in one definitions request"
    try:
        for chunk in import_chunks(batch):
            step = f"import {len(chunk)} changes in one definitions request"
            _apply_batch(client, chunk, live)
            result.applied += chunk
        for group in _groups(singles, bulk):
            step = _step(group)
            _apply_group(client, group, live)
            result.applied += group
        if own is not None:
            step = own.describe()
            _apply_own_password(client, own, live)
            result.applied.append(own)
    except BrokerError as error:
        pending = len(changes) - len(result.applied)
        raise ApplyFailed(
            f"failed to {step}: {error}; {len(result.applied)} of {len(changes)} "
            "changes were applied, "
            f"{pending} were not (a failed bulk import may be partly applied). "
            + _next_step(error),
            applied=len(result.applied),
            pending=pending,
        ) from error
    return result


def _next_step(error: BrokerError) -> str:
    if isinstance(error, BrokerUnavailable):
        return "Nothing is lost: run sync again to finish the job"
    # A rejected import may be a race with another sidecar, which the next
    # run does not repeat; a bad object is rejected again.
    return (
        "The broker rejected the request: run sync again to finish the job, "
        "and if the same request fails again, fix the cause above"
    )


def _step(group: list[Change]) -> str:
    if len(group) == 1:
        return group[0].describe()
    return f"delete {len(group)} users in one bulk-delete request"


def _split_own_password(
    changes: list[Change], login: str
) -> tuple[Change | None, list[Change]]:
    # Rotating the password we log in with must come last, or every later
    # request of this run would be rejected.
    for change in changes:
        if (
            change.kind == Kind.USER
            and change.target == (login,)
            and "password" in change.fields
        ):
            return change, [c for c in changes if c is not change]
    return None, changes


def _bulk_capable(change: Change) -> bool:
    if change.action == Action.DELETE:
        return False
    return change.kind in (
        Kind.VHOST,
        Kind.USER,
        Kind.PERMISSION,
        Kind.TOPIC_PERMISSION,
        Kind.USER_LIMIT,
    )


# Bulk ------------------------------------------------------------------------


def import_chunks(
    batch: list[Change], users_per_chunk: int = IMPORT_CHUNK_USERS
) -> list[list[Change]]:
    """Split ``batch`` into imports of at most ``users_per_chunk`` users each.

    A user's own changes, limits and grants stay in the chunk of that user,
    so no import refers to a user that an earlier one has not created yet.
    Vhosts go in the first chunk, before any grant on them.
    """
    vhosts = [c for c in batch if c.kind == Kind.VHOST]
    by_user: dict[str, list[Change]] = {}
    for change in batch:
        if change.kind != Kind.VHOST:
            by_user.setdefault(_owner(change), []).append(change)
    owners = list(by_user)
    chunks = [
        [c for owner in owners[i : i + users_per_chunk] for c in by_user[owner]]
        for i in range(0, len(owners), users_per_chunk)
    ] or [[]]
    chunks[0] = vhosts + chunks[0]
    return [chunk for chunk in chunks if chunk]


def _owner(change: Change) -> str:
    if change.kind in (Kind.PERMISSION, Kind.TOPIC_PERMISSION):
        return change.target[1]
    return change.target[0]


def _apply_batch(
    client: ManagementClient, batch: list[Change], live: BrokerState
) -> None:
    document = _definitions(batch, live)
    sizes = ", ".join(f"{len(v)} {k}" for k, v in document.items() if v)
    log.info("importing %s in one definitions request", sizes)
    _import(client, document)
    for change in batch:
        log.info("%s", _past(change))


def _import(client: ManagementClient, document: dict[str, Any]) -> None:
    try:
        client.post(api_path("definitions"), document)
    except RequestRejected as error:
        # When another sidecar creates the same user between the broker's
        # existence check and its insert, RabbitMQ 3.10 rejects the whole
        # import with 400 user_already_exists. An import is a merge, so the
        # second attempt updates the user that now exists. A document that
        # is really invalid is rejected again, and that error is raised.
        log.warning("%s; sending the definitions import once more", error)
        client.post(api_path("definitions"), document)


def _definitions(
    batch: list[Change], live: BrokerState
) -> dict[str, list[dict[str, Any]]]:
    document: dict[str, list[dict[str, Any]]] = {
        "vhosts": [],
        "users": [],
        "permissions": [],
        "topic_permissions": [],
    }
    users: dict[str, dict[str, Any]] = {}
    for change in batch:
        if change.kind == Kind.VHOST:
            document["vhosts"].append(_vhost_body(change.value, name=True))
        elif change.kind == Kind.USER:
            users[change.target[0]] = _user_entry(change, live)
        elif change.kind == Kind.PERMISSION:
            document["permissions"].append(_permission_entry(change))
        elif change.kind == Kind.TOPIC_PERMISSION:
            document["topic_permissions"].append(_topic_entry(change))
    for change in batch:
        if change.kind == Kind.USER_LIMIT:
            user, limit = change.target
            entry = users.get(user) or _unchanged_user_entry(live.users[user])
            entry.setdefault("limits", {})[limit] = change.value
            users[user] = entry
    document["users"] = list(users.values())
    return document


def _user_entry(change: Change, live: BrokerState) -> dict[str, Any]:
    declared: UserState = change.value
    current = live.users.get(declared.name)
    if "password" in change.fields or current is None or current.password is None:
        stored = _stored(declared)
    else:
        assert isinstance(current.password, StoredPassword)
        stored = current.password
    return {
        "name": declared.name,
        "password_hash": stored.password_hash,
        "hashing_algorithm": stored.algorithm.value,
        "tags": sorted(declared.tags),
    }


def _unchanged_user_entry(current: UserState) -> dict[str, Any]:
    # A limit change on its own still needs the whole user in the import,
    # so the user is re-sent exactly as the broker stores it.
    stored = current.password
    entry: dict[str, Any] = {"name": current.name, "tags": sorted(current.tags)}
    if isinstance(stored, StoredPassword):
        entry["password_hash"] = stored.password_hash
        entry["hashing_algorithm"] = stored.algorithm.value
    else:
        entry["password_hash"] = ""
    return entry


def _stored(user: UserState) -> StoredPassword:
    password = user.password
    if isinstance(password, StoredPassword):
        return password
    assert isinstance(password, PlainPassword), "declared users always have a password"
    algorithm = password.algorithm
    password_hash = hash_password(password.secret.get_secret_value(), algorithm)
    redact.register(password_hash)
    return StoredPassword(password_hash, algorithm)


def _permission_entry(change: Change) -> dict[str, Any]:
    vhost, user = change.target
    access: Access = change.value
    return {"user": user, "vhost": vhost, **vars(access)}


def _topic_entry(change: Change) -> dict[str, Any]:
    vhost, user, exchange = change.target
    access: TopicAccess = change.value
    return {"user": user, "vhost": vhost, "exchange": exchange, **vars(access)}


def _vhost_body(vhost: VhostState, *, name: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"name": vhost.name} if name else {}
    if vhost.description is not None:
        body["description"] = vhost.description
    return body


# One request per object ------------------------------------------------------


def _groups(changes: list[Change], bulk: bool) -> list[list[Change]]:
    """Split into single changes, with all user deletions as one group in bulk mode."""
    deletions = [
        c for c in changes if c.kind == Kind.USER and c.action == Action.DELETE
    ]
    groups: list[list[Change]] = []
    for change in changes:
        is_deletion = change.kind == Kind.USER and change.action == Action.DELETE
        if bulk and is_deletion:
            if change is deletions[0]:
                groups.append(deletions)
        else:
            groups.append([change])
    return groups


def _apply_group(
    client: ManagementClient, group: list[Change], live: BrokerState
) -> None:
    if len(group) > 1:
        # Only user deletions are grouped.
        delete_users(client, [change.target[0] for change in group])
    else:
        change = group[0]
        _HANDLERS[(change.kind, change.action == Action.DELETE)](client, change, live)
    for change in group:
        log.info("%s", _past(change))


def _put_vhost(client: ManagementClient, change: Change, live: BrokerState) -> None:
    client.put(api_path("vhosts", change.target[0]), _vhost_body(change.value))


def _put_user(client: ManagementClient, change: Change, live: BrokerState) -> None:
    entry = _user_entry(change, live)
    body = {
        "password_hash": entry["password_hash"],
        "hashing_algorithm": entry["hashing_algorithm"],
        # A comma-separated string is the form every broker version accepts.
        "tags": ",".join(entry["tags"]),
    }
    client.put(api_path("users", change.target[0]), body)


def _put_permission(
    client: ManagementClient, change: Change, live: BrokerState
) -> None:
    vhost, user = change.target
    client.put(api_path("permissions", vhost, user), vars(change.value))


def _put_topic_permission(
    client: ManagementClient, change: Change, live: BrokerState
) -> None:
    vhost, user, exchange = change.target
    client.put(
        api_path("topic-permissions", vhost, user),
        {"exchange": exchange, **vars(change.value)},
    )


def _put_user_limit(
    client: ManagementClient, change: Change, live: BrokerState
) -> None:
    user, limit = change.target
    client.put(api_path("user-limits", user, limit), {"value": change.value})


def _put_vhost_limit(
    client: ManagementClient, change: Change, live: BrokerState
) -> None:
    vhost, limit = change.target
    client.put(api_path("vhost-limits", vhost, limit), {"value": change.value})


def _delete_path(
    *prefix: str,
) -> Callable[[ManagementClient, Change, BrokerState], None]:
    def delete(client: ManagementClient, change: Change, live: BrokerState) -> None:
        client.delete(api_path(*prefix, *change.target))

    return delete


def _delete_permission(
    client: ManagementClient, change: Change, live: BrokerState
) -> None:
    vhost, user = change.target
    client.delete(api_path("permissions", vhost, user))


def _delete_topic_permission(
    client: ManagementClient, change: Change, live: BrokerState
) -> None:
    vhost, user, exchange = change.target
    client.delete(api_path("topic-permissions", vhost, user, exchange))


Handler = Callable[[ManagementClient, Change, BrokerState], None]
_HANDLERS: dict[tuple[Kind, bool], Handler] = {
    (Kind.VHOST, False): _put_vhost,
    (Kind.USER, False): _put_user,
    (Kind.PERMISSION, False): _put_permission,
    (Kind.TOPIC_PERMISSION, False): _put_topic_permission,
    (Kind.USER_LIMIT, False): _put_user_limit,
    (Kind.VHOST_LIMIT, False): _put_vhost_limit,
    (Kind.VHOST, True): _delete_path("vhosts"),
    (Kind.USER, True): _delete_path("users"),
    (Kind.PERMISSION, True): _delete_permission,
    (Kind.TOPIC_PERMISSION, True): _delete_topic_permission,
    (Kind.USER_LIMIT, True): _delete_path("user-limits"),
    (Kind.VHOST_LIMIT, True): _delete_path("vhost-limits"),
}


def _apply_own_password(
    client: ManagementClient, change: Change, live: BrokerState
) -> None:
    _put_user(client, change, live)
    log.info("%s (the provisioner's own login)", _past(change))
    declared: UserState = change.value
    if isinstance(declared.password, PlainPassword):
        client.set_password(declared.password.secret.get_secret_value())


def delete_users(client: ManagementClient, names: list[str]) -> None:
    """Delete ``names`` in one request, falling back to one request each."""
    try:
        client.post(api_path("users", "bulk-delete"), {"users": names})
    except RequestRejected:
        # 3.x rejects the whole call when one user is already gone, after
        # deleting the ones before it; deleting one by one finishes the job.
        for name in names:
            client.delete(api_path("users", name))


_PAST = {Action.CREATE: "created", Action.UPDATE: "updated", Action.DELETE: "deleted"}


def _past(change: Change) -> str:
    text = change.describe()
    verb = str(change.action)
    return _PAST[change.action] + text[len(verb) :]
