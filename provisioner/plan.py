"""Compute the changes that turn the live broker into the declared one.

``make_plan`` is a pure function: no requests, no clock, no randomness. It
owns every declared user fully (tags, password, limits, permissions and topic
permissions), leaves undeclared users alone unless pruning or guest removal
is on, and never deletes the login account, a protected account or the
vhost ``/``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from provisioner.errors import PlanRejected, Problem
from provisioner.state import BrokerState, UserState, VhostState, passwords_equal

ROOT_VHOST = "/"
ADMIN_TAG = "administrator"
GUEST = "guest"
# From 4.2.0 the broker refuses to change or delete users with this tag over
# the HTTP API, and bulk-delete skips them.
PROTECTED_TAG = "protected"


class Action(StrEnum):
    """Action a change takes on its object."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class Kind(StrEnum):
    """Kind of broker object a change touches."""

    VHOST = "vhost"
    USER = "user"
    PERMISSION = "permission"
    TOPIC_PERMISSION = "topic permission"
    USER_LIMIT = "user limit"
    VHOST_LIMIT = "vhost limit"


@dataclass(frozen=True)
class Change:
    """One typed change; ``value`` is the declared object (None for deletions).

    ``target`` names the object: (vhost,), (user,), (vhost, user),
    (vhost, user, exchange), (user, limit) or (vhost, limit).
    """

    action: Action
    kind: Kind
    target: tuple[str, ...]
    fields: tuple[str, ...] = ()
    value: Any = None

    def describe(self) -> str:
        """Describe the change in one line, without any secret."""
        subject = _subject(self.kind, self.target)
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        if (
            self.kind in (Kind.USER_LIMIT, Kind.VHOST_LIMIT)
            and self.action != Action.DELETE
        ):
            detail = f" = {self.value}"
        return f"{self.action} {subject}{detail}"


def _subject(kind: Kind, target: tuple[str, ...]) -> str:
    if kind == Kind.PERMISSION:
        return f"permission of user {target[1]!r} on vhost {target[0]!r}"
    if kind == Kind.TOPIC_PERMISSION:
        return f"topic permission of user {target[1]!r} on vhost {target[0]!r}, exchange {target[2]!r}"
    if kind == Kind.USER_LIMIT:
        return f"user limit {target[1]} of {target[0]!r}"
    if kind == Kind.VHOST_LIMIT:
        return f"vhost limit {target[1]} of {target[0]!r}"
    return f"{kind} {target[0]!r}"


@dataclass(frozen=True)
class PrunePolicy:
    """Deletion policy of ``make_plan``: what it may delete and what it never touches."""

    users: bool = False
    vhosts: bool = False
    protect: frozenset[str] = frozenset()
    allow_empty: bool = False


def make_plan(
    declared: BrokerState,
    live: BrokerState,
    *,
    login: str,
    prune: PrunePolicy = PrunePolicy(),
    remove_guest: bool = False,
) -> list[Change]:
    """Return the ordered changes: vhosts, users, grants, limits, then deletions.

    With ``remove_guest`` the user ``guest`` is deleted (as the first user
    deletion) once another administrator exists, unless we log in as guest.
    """
    _reject_unsafe(declared, live, login, prune)
    changes: list[Change] = []
    changes += _vhost_changes(declared, live)
    changes += _user_changes(declared, live)
    changes += _grant_changes(declared.permissions, live.permissions, Kind.PERMISSION)
    changes += _grant_changes(
        declared.topic_permissions, live.topic_permissions, Kind.TOPIC_PERMISSION
    )
    user_limits = _limit_changes(declared.users, live.users, Kind.USER_LIMIT)
    vhost_limits = _limit_changes(declared.vhosts, live.vhosts, Kind.VHOST_LIMIT)
    changes += [c for c in user_limits + vhost_limits if c.action != Action.DELETE]
    changes += [c for c in user_limits + vhost_limits if c.action == Action.DELETE]
    changes += _grant_deletions(declared, live)
    changes += _creator_grants(declared, live, login)
    pruned = _prune(declared, live, login, prune)
    if remove_guest:
        guest = _guest_removal(declared, live, login, prune, pruned)
        changes += guest + [c for c in pruned if c not in guest]
    else:
        changes += pruned
    _check_login_kept(changes, login)
    return changes


def _reject_unsafe(
    declared: BrokerState, live: BrokerState, login: str, prune: PrunePolicy
) -> None:
    problems = []
    if (prune.users or prune.vhosts) and not declared.users and not prune.allow_empty:
        problems.append(
            Problem(
                "prune",
                "the file declares no users, so pruning would delete every account; "
                "set prune.allow_empty: true if that is really meant",
            )
        )
    own = declared.users.get(login)
    if own is not None and ADMIN_TAG not in own.tags and login in live.users:
        problems.append(
            Problem(
                f"users[{login!r}].tags",
                f"user {login!r} is the account the provisioner logs in with; "
                f"removing its {ADMIN_TAG} tag would lock the provisioner out, so add "
                f"'{ADMIN_TAG}' to its tags",
            )
        )
    if problems:
        raise PlanRejected(problems)


def _vhost_changes(declared: BrokerState, live: BrokerState) -> list[Change]:
    changes = []
    for name, vhost in declared.vhosts.items():
        current = live.vhosts.get(name)
        if current is None:
            changes.append(
                Change(Action.CREATE, Kind.VHOST, (name,), _vhost_fields(vhost), vhost)
            )
        elif vhost.description is not None and vhost.description != current.description:
            changes.append(
                Change(Action.UPDATE, Kind.VHOST, (name,), ("description",), vhost)
            )
    return changes


def _vhost_fields(vhost: VhostState) -> tuple[str, ...]:
    return ("description",) if vhost.description else ()


def _user_changes(declared: BrokerState, live: BrokerState) -> list[Change]:
    changes = []
    for name, user in declared.users.items():
        current = live.users.get(name)
        if current is None:
            fields = ("password", "tags") if user.tags else ("password",)
            changes.append(Change(Action.CREATE, Kind.USER, (name,), fields, user))
            continue
        differs = _user_differences(user, current)
        if differs:
            changes.append(Change(Action.UPDATE, Kind.USER, (name,), differs, user))
    return changes


def _user_differences(declared: UserState, live: UserState) -> tuple[str, ...]:
    fields = []
    if not passwords_equal(declared.password, live.password):
        fields.append("password")
    if declared.tags != live.tags:
        fields.append("tags")
    return tuple(fields)


def _grant_changes(
    declared: dict[Any, Any], live: dict[Any, Any], kind: Kind
) -> list[Change]:
    changes = []
    for key, grant in declared.items():
        current = live.get(key)
        if current is None:
            changes.append(Change(Action.CREATE, kind, key, (), grant))
        elif current != grant:
            fields = tuple(
                f for f in vars(grant) if getattr(grant, f) != getattr(current, f)
            )
            changes.append(Change(Action.UPDATE, kind, key, fields, grant))
    return changes


def _limit_changes(
    declared: dict[str, UserState] | dict[str, VhostState],
    live: dict[str, UserState] | dict[str, VhostState],
    kind: Kind,
) -> list[Change]:
    changes = []
    for name, owner in declared.items():
        current = live.get(name)
        live_limits = current.limits if current is not None else {}
        for limit, value in sorted(owner.limits.items()):
            if live_limits.get(limit) != value:
                action = Action.UPDATE if limit in live_limits else Action.CREATE
                changes.append(Change(action, kind, (name, limit), (), value))
        for limit in sorted(set(live_limits) - set(owner.limits)):
            changes.append(Change(Action.DELETE, kind, (name, limit)))
    return changes


def _grant_deletions(declared: BrokerState, live: BrokerState) -> list[Change]:
    owned = set(declared.users)
    changes = [
        Change(Action.DELETE, Kind.TOPIC_PERMISSION, key)
        for key in live.topic_permissions
        if key[1] in owned and key not in declared.topic_permissions
    ]
    changes += [
        Change(Action.DELETE, Kind.PERMISSION, key)
        for key in live.permissions
        if key[1] in owned and key not in declared.permissions
    ]
    return changes


def _creator_grants(
    declared: BrokerState, live: BrokerState, login: str
) -> list[Change]:
    # The broker gives the user that creates a vhost full permissions on it.
    # When the file owns the login account, that grant is not declared, so
    # it is removed in the same run rather than by the next one.
    if login not in declared.users:
        return []
    return [
        Change(Action.DELETE, Kind.PERMISSION, (name, login))
        for name in declared.vhosts
        if name not in live.vhosts and (name, login) not in declared.permissions
    ]


def _prune(
    declared: BrokerState, live: BrokerState, login: str, prune: PrunePolicy
) -> list[Change]:
    changes = []
    if prune.users:
        keep = set(declared.users) | set(prune.protect) | {login}
        changes += [
            Change(Action.DELETE, Kind.USER, (name,))
            for name in sorted(live.users)
            if name not in keep and PROTECTED_TAG not in live.users[name].tags
        ]
    if prune.vhosts:
        keep = set(declared.vhosts) | {ROOT_VHOST}
        changes += [
            Change(Action.DELETE, Kind.VHOST, (name,))
            for name in sorted(live.vhosts)
            if name not in keep
        ]
    return changes


def _guest_removal(
    declared: BrokerState,
    live: BrokerState,
    login: str,
    prune: PrunePolicy,
    pruned: list[Change],
) -> list[Change]:
    guest = live.users.get(GUEST)
    if guest is None or login == GUEST or GUEST in declared.users:
        return []
    if GUEST in prune.protect or PROTECTED_TAG in guest.tags:
        return []
    if not _other_administrators(declared, live, pruned):
        # Deleting guest now could leave the broker with no administrator.
        return []
    return [Change(Action.DELETE, Kind.USER, (GUEST,))]


def _other_administrators(
    declared: BrokerState, live: BrokerState, pruned: list[Change]
) -> set[str]:
    # Declared tags win over live ones, since the plan applies them; live
    # users that pruning deletes do not count.
    deleted = {c.target[0] for c in pruned if c.kind == Kind.USER}
    survivors = {**live.users, **declared.users}
    return {
        name
        for name, user in survivors.items()
        if name not in (GUEST, *deleted) and ADMIN_TAG in user.tags
    }


def _check_login_kept(changes: list[Change], login: str) -> None:
    # The filters above already keep the login; this guards every deletion
    # path added later, because deleting it would lock the provisioner out.
    for change in changes:
        if change.kind != Kind.USER or change.action != Action.DELETE:
            continue
        if change.target == (login,):
            problem = Problem(
                f"users[{login!r}]",
                f"the plan would delete {login!r}, the account the provisioner "
                "logs in with; nothing was changed",
            )
            raise PlanRejected([problem])


def count_by_action(changes: Iterable[Change]) -> dict[Action, int]:
    """Count changes per action, every action present."""
    counts = dict.fromkeys(Action, 0)
    for change in changes:
        counts[change.action] += 1
    return counts
