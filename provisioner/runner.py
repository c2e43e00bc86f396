"""The steps every broker-facing command shares: load, wait, read, plan, apply.

The CLI and the serve loop call these; they raise the package's errors and
leave printing and exit codes to the caller.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from provisioner.apply import ApplyResult, apply_plan
from provisioner.client import ManagementClient
from provisioner.desired import declared_state
from provisioner.errors import ApplyFailed, BrokerUnavailable
from provisioner.plan import Change, PrunePolicy, make_plan
from provisioner.readiness import wait_until_ready
from provisioner.settings import GUEST, Settings
from provisioner.spec import UsersFile
from provisioner.state import BrokerState, read_live_state
from provisioner.validate import load_users_file

log = logging.getLogger(__name__)

# A broker restart takes longer than one request's retries (about 12-15 s
# stop and start for 3.10.8, against 6-11 s of retries), so a sync that
# loses the broker waits for it and plans again, a bounded number of times.
SYNC_ATTEMPTS = 3


@dataclass
class Declared:
    """The validated file and the broker state it declares."""

    users_file: UsersFile
    state: BrokerState
    prune: PrunePolicy


@dataclass
class PlanOutcome:
    """A computed plan with the live state it was computed against."""

    changes: list[Change]
    live: BrokerState


def load_declared(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> Declared:
    """Load and validate the users file; nothing touches the broker."""
    env = os.environ if environ is None else environ
    path = settings.users_file
    users_file = load_users_file(path, env)
    if not users_file.users and not users_file.vhosts:
        # A mount that failed or a truncated write leaves an empty file at
        # boot; without pruning it changes nothing, but it is worth a line.
        log.warning(
            "%s declares no users and no vhosts, so nothing will be created", path
        )
    prune = users_file.prune
    policy = PrunePolicy(
        users=prune.users,
        vhosts=prune.vhosts,
        protect=frozenset(prune.protect),
        allow_empty=prune.allow_empty,
    )
    return Declared(users_file, declared_state(users_file, path.parent), policy)


def connect(settings: Settings) -> ManagementClient:
    """Create the client, warning when it would log in as guest."""
    if settings.login == GUEST:
        log.warning(
            "logging in as %r; set PROVISIONER_USERNAME and PROVISIONER_PASSWORD "
            "(or RABBITMQ_DEFAULT_USER/RABBITMQ_DEFAULT_PASS) to a dedicated administrator",
            GUEST,
        )
    return ManagementClient(settings)


def compute_plan(
    client: ManagementClient, declared: Declared, settings: Settings
) -> PlanOutcome:
    """Wait for the broker, read its state and plan the changes."""
    wait_until_ready(client, settings.wait_timeout)
    live = read_live_state(client)
    changes = make_plan(
        declared.state, live, login=settings.login, prune=declared.prune
    )
    return PlanOutcome(changes, live)


def apply(
    client: ManagementClient, outcome: PlanOutcome, settings: Settings
) -> ApplyResult:
    """Apply a computed plan."""
    return apply_plan(
        client, outcome.changes, outcome.live, login=settings.login, bulk=settings.bulk
    )


def sync(
    client: ManagementClient, declared: Declared, settings: Settings
) -> list[Change]:
    """Plan and apply until done; return the changes of the first plan.

    When the broker becomes unreachable part way, the next attempt waits for
    it and plans again from the live state, so the changes that were applied
    are not repeated. Other failures, and the last attempt's, are raised.
    """
    first: list[Change] | None = None
    for attempt in range(1, SYNC_ATTEMPTS + 1):
        outcome = compute_plan(client, declared, settings)
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
