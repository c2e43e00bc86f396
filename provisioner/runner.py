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
from provisioner.plan import Change, PrunePolicy, make_plan
from provisioner.readiness import wait_until_ready
from provisioner.settings import GUEST, Settings
from provisioner.state import BrokerState, read_live_state
from provisioner.validate import load_users_file

log = logging.getLogger(__name__)


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


def load_declared(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> Declared:
    """Load and validate the users file; nothing touches the broker."""
    env = os.environ if environ is None else environ
    path = settings.users_file
    users_file = load_users_file(path, env)
    prune = users_file.prune
    policy = PrunePolicy(
        users=prune.users,
        vhosts=prune.vhosts,
        protect=frozenset(prune.protect),
        allow_empty=prune.allow_empty,
    )
    return Declared(declared_state(users_file, path.parent), policy)


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
