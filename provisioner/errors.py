"""Error types of the provisioner, one root with a subclass per exit code.

The CLI maps each subclass to its exit code, so code anywhere in the package
can raise the error that describes the failure and never calls ``sys.exit``.
Messages never contain secrets: callers pass names, paths and statuses only.
"""

from __future__ import annotations

from dataclasses import dataclass


class ProvisionerError(Exception):
    """Root of every error the provisioner raises on purpose."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One defect in the users file or the settings, with its place."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class InvalidInput(ProvisionerError):
    """The users file or the settings are invalid; nothing was sent to the broker."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"invalid input, {count} {noun}:"]
        lines += [f"  {problem}" for problem in problems]
        super().__init__("\n".join(lines))


class PlanRejected(InvalidInput):
    """The file is well formed but would change the broker unsafely."""


class BrokerError(ProvisionerError):
    """A request to the management API failed."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        path: str = "",
        status: int | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        super().__init__(message)


class BrokerUnavailable(BrokerError):
    """The broker could not be reached, or returned 5xx, after every retry."""


class RequestRejected(BrokerError):
    """The broker returned a 4xx status that retrying cannot fix."""


class AuthenticationFailed(RequestRejected):
    """The broker rejected the provisioner's own credentials."""

    exit_code = 2


class MissingDependency(ProvisionerError):
    """An optional package that the requested command needs is not installed."""

    exit_code = 2


class TlsVerificationFailed(BrokerError):
    """The broker's certificate failed verification; waiting cannot fix it."""

    exit_code = 2


class NotAdministrator(RequestRejected):
    """The login is valid but lacks the administrator tag; waiting cannot fix it."""

    exit_code = 2


class BrokerNotReady(ProvisionerError):
    """The broker was not ready before the wait deadline."""

    exit_code = 3


class ApplyFailed(ProvisionerError):
    """Applying the plan stopped part way; the next sync finishes the job."""

    def __init__(self, message: str, *, applied: int, pending: int) -> None:
        self.applied = applied
        self.pending = pending
        super().__init__(message)
