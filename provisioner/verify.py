"""Prove on a live broker that each MQTT user may do what its block grants, and no more.

``sync`` writes permissions; this module checks their effect as a device
experiences it. It logs in over MQTT-over-WebSocket as each user that has
an ``mqtt`` block, with the password from the users file, and runs the
probes that ``verify_plan`` chooses, one fresh connection per probe. Users
declared only with ``password_hash`` are skipped, because their password is
unknown. The management API is not used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from provisioner import mqtt_probe, spec
from provisioner.errors import BrokerNotReady, InvalidInput, Problem
from provisioner.mqtt_probe import Endpoint, Login, Outcome, Result
from provisioner.settings import Settings
from provisioner.state import BrokerState, PlainPassword
from provisioner.verify_plan import Action, Check, plan_checks

log = logging.getLogger(__name__)

DEFAULT_VHOST = "/"

Probe = Callable[[Endpoint, Check, Login], Result]


@dataclass(frozen=True)
class Row:
    """One probe with what the broker did."""

    check: Check
    result: Result

    @property
    def ok(self) -> bool:
        """Whether the broker did what the users file declares."""
        return self.result.outcome.value == self.check.expected.value


@dataclass(frozen=True)
class Report:
    """Every row of a run and the users that could not be probed."""

    rows: list[Row]
    skipped: list[tuple[str, str]]

    @property
    def surprises(self) -> list[Row]:
        """Rows where the broker allowed a refused action or refused an allowed one."""
        return [row for row in self.rows if not row.ok]


def select_users(
    users: Sequence[spec.User], names: Sequence[str] | None
) -> list[spec.User]:
    """Return the users with an mqtt block, limited to ``names`` when given.

    Raises InvalidInput for a name that is not declared or has no mqtt block,
    and when no user is left to verify.
    """
    problems: list[Problem] = []
    declared = {user.name: user for user in users}
    for name in names or ():
        if name not in declared:
            problems.append(
                Problem("--user", f"user {name!r} is not declared in the file")
            )
        elif declared[name].mqtt is None:
            problems.append(
                Problem(
                    "--user",
                    f"user {name!r} has no mqtt block, so there is nothing to verify",
                )
            )
    if problems:
        raise InvalidInput(problems)

    chosen = [u for u in users if u.mqtt is not None and (not names or u.name in names)]
    if not chosen:
        raise InvalidInput(
            [
                Problem(
                    "users", "no user has an mqtt block, so there is nothing to verify"
                )
            ]
        )
    return chosen


def verify_users(
    users: Sequence[spec.User],
    state: BrokerState,
    endpoint: Endpoint,
    *,
    probe: Probe | None = None,
) -> Report:
    """Run every probe for ``users`` and return the report.

    Raises BrokerNotReady when the broker cannot be reached at all.
    """
    run = probe or run_probe
    rows: list[Row] = []
    skipped: list[tuple[str, str]] = []
    for user in users:
        assert user.mqtt is not None, "select_users returns users with an mqtt block"
        password = state.users[user.name].password
        if not isinstance(password, PlainPassword):
            skipped.append(
                (
                    user.name,
                    "declared with password_hash only, so its password is unknown",
                )
            )
            continue
        secret = password.secret.get_secret_value()
        for check in plan_checks(user.name, user.mqtt):
            login = Login(
                mqtt_username(user.name, user.mqtt.vhost), secret, check.client_id
            )
            result = _run_one(run, endpoint, check, login)
            log.debug(
                "%s %s %s: %s (%s)",
                check.user,
                check.name,
                check.target,
                result.outcome,
                result.detail,
            )
            rows.append(Row(check, result))
            if check.action is Action.CONNECT and not rows[-1].ok:
                skipped.append((user.name, "the login failed, so no other check ran"))
                break
    return Report(rows, skipped)


def run_probe(endpoint: Endpoint, check: Check, login: Login) -> Result:
    """Send the probe's packet on a fresh connection."""
    if check.action is Action.CONNECT:
        return mqtt_probe.probe_connect(endpoint, login)
    if check.action is Action.PUBLISH:
        return mqtt_probe.probe_publish(endpoint, login, check.topic)
    return mqtt_probe.probe_subscribe(endpoint, login, check.topic, check.qos)


def mqtt_username(username: str, vhost: str) -> str:
    """Return the MQTT user name that logs ``username`` into ``vhost``.

    The MQTT plugin reads ``vhost:user``, so a user on another vhost, or one
    whose name contains ``:``, is sent with its vhost in front.
    """
    if vhost == DEFAULT_VHOST and ":" not in username:
        return username
    return f"{vhost}:{username}"


def endpoint_from(settings: Settings, timeout: float) -> Endpoint:
    """Build the probe endpoint from the MQTT URL and the CA bundle setting."""
    return Endpoint.from_url(
        settings.mqtt_url, ca_bundle=settings.ca_bundle, timeout=timeout
    )


def render_report(report: Report) -> str:
    """Return the table of rows, the skipped users and a summary line."""
    header = ("user", "check", "topic/client id", "expected", "got", "ok")
    table = [header] + [
        (
            row.check.user,
            row.check.name,
            row.check.target,
            row.check.expected.value,
            f"{row.result.outcome.value} ({row.result.detail})",
            "ok" if row.ok else "SURPRISE",
        )
        for row in report.rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) for cell, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in table
    ]
    lines += [f"skipped {name!r}: {reason}" for name, reason in report.skipped]
    lines += [_describe_surprise(row) for row in report.surprises]
    lines.append(_summary(report))
    return "\n".join(lines)


def _run_one(run: Probe, endpoint: Endpoint, check: Check, login: Login) -> Result:
    try:
        return run(endpoint, check, login)
    except mqtt_probe.BrokerUnreachable as error:
        raise BrokerNotReady(
            f"MQTT over WebSocket is not reachable: {error}"
        ) from error


def _describe_surprise(row: Row) -> str:
    check = row.check
    if row.result.outcome is Outcome.CONNECT_FAILED:
        return (
            f"surprise: user {check.user!r} could not connect with client id "
            f"{check.client_id!r} ({row.result.detail}); check its password and vhost"
        )
    verb = "may" if row.result.outcome is Outcome.ALLOWED else "may not"
    subject = f"user {check.user!r} (client id {check.client_id!r})"
    return (
        f"surprise: {subject} {verb} {check.action.value} {check.topic!r} "
        f"({check.name}), but the users file says {check.expected.value}"
    )


def _summary(report: Report) -> str:
    checks = _count(len(report.rows), "check")
    surprises = len(report.surprises)
    if surprises == 0:
        return f"{checks}, all as declared."
    return (
        f"{checks}, {_count(surprises, 'surprise')}: "
        "the broker does not enforce the users file."
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
