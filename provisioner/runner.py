"""The steps every broker-facing command shares: load, wait, read, plan, apply.

The CLI and the serve loop call these; they raise the package's errors and
leave printing and exit codes to the caller.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from provisioner.apply import ApplyResult, apply_plan
from provisioner.client import ManagementClient
from provisioner.connections import close_user_connections, users_to_disconnect
from provisioner.desired import declared_state
from provisioner.errors import (
    ApplyFailed,
    BrokerError,
    BrokerUnavailable,
    InvalidInput,
    PlanRejected,
    Problem,
)
from provisioner.passwords import password_matches
from provisioner.plan import ADMIN_TAG, Change, PrunePolicy, make_plan
from provisioner.readiness import wait_until_ready
from provisioner.settings import GUEST, Settings
from provisioner.spec import UsersFile
from provisioner.state import BrokerState, PlainPassword, read_live_state
from provisioner.validate import load_users_file

log = logging.getLogger(__name__)

# A broker restart takes longer than one request's retries (about 12-15 s
# stop and start for 3.10.8, against 6-11 s of retries), so a sync that
# loses the broker waits for it and plans again, a bounded number of times.
SYNC_ATTEMPTS = 3


@dataclass
class Declared:
    """The broker state a validated file declares, and what it may prune.

    The parsed models are not kept: the state carries everything the plan
    needs, and the models of thousands of users cost megabytes.
    """

    state: BrokerState
    prune: PrunePolicy


@dataclass
class PlanOutcome:
    """A computed plan with the live state it was computed against."""

    changes: list[Change]
    live: BrokerState


def load_users(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> UsersFile:
    """Load and validate the users file, logging its warnings; no broker."""
    env = os.environ if environ is None else environ
    path = settings.users_file
    users_file = load_users_file(path, env)
    _warn_md5(users_file)
    if not users_file.users and not users_file.vhosts:
        # A mount that failed or a truncated write leaves an empty file at
        # boot; without pruning it changes nothing, but it is worth a line.
        log.warning(
            "%s declares no users and no vhosts, so nothing will be created", path
        )
    return users_file


def declare(users_file: UsersFile, settings: Settings) -> Declared:
    """Compile a validated file into the state and prune policy to plan with."""
    prune = users_file.prune
    policy = PrunePolicy(
        users=prune.users,
        vhosts=prune.vhosts,
        protect=frozenset(prune.protect),
        allow_empty=prune.allow_empty,
    )
    return Declared(declared_state(users_file, settings.users_file.parent), policy)


def load_declared(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> Declared:
    """Load the users file and compile it; the parsed models are not kept."""
    return declare(load_users(settings, environ), settings)


def _warn_md5(users_file: UsersFile) -> None:
    # The broker still accepts MD5 hashes, so they are valid, but an MD5 hash
    # that leaks is cheap to brute-force.
    for user in users_file.users:
        if user.hashing_algorithm != "md5":
            continue
        if user.password_hash is not None:
            log.warning(
                "user %r has an md5 password_hash; md5 is legacy and fast to "
                "brute-force, so rehash with `provisioner hash-password` (sha256)",
                user.name,
            )
        else:
            log.warning(
                "user %r has hashing_algorithm md5; md5 is legacy and fast to "
                "brute-force, so prefer sha256 (the default)",
                user.name,
            )


def connect(settings: Settings) -> ManagementClient:
    """Create the client, warning when it would log in as guest or with "guest".

    Raises InvalidInput when a login user is set without a password, which
    would otherwise surface as a confusing 401.
    """
    if settings.username is not None and settings.password is None:
        raise InvalidInput(
            [
                Problem(
                    "PROVISIONER_PASSWORD",
                    f"not set, but the login user {settings.username!r} is; set "
                    "PROVISIONER_PASSWORD (or RABBITMQ_DEFAULT_PASS) to its password",
                )
            ]
        )
    if settings.login == GUEST:
        log.warning(
            "logging in as %r; set PROVISIONER_USERNAME and PROVISIONER_PASSWORD "
            "(or RABBITMQ_DEFAULT_USER/RABBITMQ_DEFAULT_PASS) to a dedicated administrator",
            GUEST,
        )
    elif settings.login_password == GUEST:
        log.warning(
            "user %r logs in with the well-known password 'guest'; set a strong "
            "PROVISIONER_PASSWORD (or RABBITMQ_DEFAULT_PASS)",
            settings.login,
        )
    return ManagementClient(settings)


def reject_login_lockout(declared: Declared, settings: Settings) -> None:
    """Raise PlanRejected when the file would lock the login account out.

    That is a declared login without the administrator tag, or with a
    password other than the one it logs in with: every later run with the
    same settings would be rejected. Declare the login with the same secret
    (`password: ${RABBITMQ_DEFAULT_PASS}`), or rotate both.
    """
    own = declared.state.users.get(settings.login)
    if own is None or own.password is None:
        return
    if ADMIN_TAG not in own.tags:
        raise PlanRejected(
            [
                Problem(
                    f"users[{settings.login!r}].tags",
                    f"user {settings.login!r} is the account the provisioner logs in "
                    f"with; without the {ADMIN_TAG} tag it would be locked out, so add "
                    f"'{ADMIN_TAG}' to its tags",
                )
            ]
        )
    current = settings.login_password
    password = own.password
    if isinstance(password, PlainPassword):
        same = password.secret.get_secret_value() == current
    else:
        same = password_matches(current, password.password_hash, password.algorithm)
    if not same:
        raise PlanRejected(
            [
                Problem(
                    f"users[{settings.login!r}].password",
                    f"the file gives {settings.login!r}, the account the provisioner "
                    "logs in with, a password other than PROVISIONER_PASSWORD "
                    "(or RABBITMQ_DEFAULT_PASS); later runs would be locked out, so "
                    "declare it with the same secret or change both together",
                )
            ]
        )


def compute_plan(
    client: ManagementClient,
    declared: Declared,
    settings: Settings,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> PlanOutcome:
    """Wait for the broker, read its state and plan the changes."""
    reject_login_lockout(declared, settings)
    wait_until_ready(client, settings.wait_timeout, sleep=sleep)
    live = read_live_state(client)
    changes = make_plan(
        declared.state,
        live,
        login=settings.login,
        prune=declared.prune,
        remove_guest=settings.remove_guest,
    )
    return PlanOutcome(changes, live)


def apply(
    client: ManagementClient, outcome: PlanOutcome, settings: Settings
) -> ApplyResult:
    """Apply a computed plan, then close rotated users' connections if configured."""
    try:
        result = apply_plan(
            client,
            outcome.changes,
            outcome.live,
            login=settings.login,
            bulk=settings.bulk,
        )
    except ApplyFailed:
        if settings.close_connections:
            _close_after_failure(client, outcome.changes)
        raise
    if settings.close_connections:
        close_user_connections(client, users_to_disconnect(outcome.changes))
    return result


def _close_after_failure(client: ManagementClient, changes: list[Change]) -> None:
    # Some passwords may already have changed (a failed bulk import can be
    # partly applied), and the next run would see them as unchanged and never
    # close their sessions. So every planned rotation is closed now; clients
    # whose password did not change yet reconnect with it.
    try:
        close_user_connections(client, users_to_disconnect(changes))
    except BrokerError as error:
        log.warning("could not close the connections of rotated users: %s", error)


def sync(
    client: ManagementClient,
    declared: Declared,
    settings: Settings,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Change]:
    """Plan and apply until done; return the changes of the first plan.

    When the broker becomes unreachable part way, the next attempt waits for
    it and plans again from the live state, so the changes that were applied
    are not repeated. Other failures, and the last attempt's, are raised.
    """
    first: list[Change] | None = None
    for attempt in range(1, SYNC_ATTEMPTS + 1):
        outcome = compute_plan(client, declared, settings, sleep=sleep)
        first = outcome.changes if first is None else first
        if not outcome.changes:
            break
        try:
            apply(client, outcome, settings)
        except ApplyFailed as error:
            transient = isinstance(error.__cause__, BrokerUnavailable)
            if not transient or attempt == SYNC_ATTEMPTS:
                raise
            log.warning(
                "%s; waiting for the broker and planning again (attempt %d of %d)",
                error.__cause__,
                attempt + 1,
                SYNC_ATTEMPTS,
            )
        else:
            break
    return first or []
