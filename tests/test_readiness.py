"""Readiness rules with a scripted client: backoff, 401 grace and 403."""

from __future__ import annotations

from typing import cast

import pytest

from provisioner.client import ManagementClient
from provisioner.errors import (
    AuthenticationFailed,
    BrokerNotReady,
    BrokerUnavailable,
    NotAdministrator,
)
from provisioner.readiness import AUTH_GRACE, MAX_DELAY, wait_until_ready


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedClient:
    """Raises the scripted errors in turn, then returns 200."""

    base_url = "http://127.0.0.1:1"

    def __init__(self, errors: list[Exception | None]) -> None:
        self.errors = list(errors)

    def request(self, method, path, *, ok=(200,), retry=True):
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        return type("Response", (), {"status_code": 200})()

    def get(self, path, *, retry=True):
        return {}


def unavailable() -> BrokerUnavailable:
    return BrokerUnavailable(
        "GET /api/health/checks/virtual-hosts failed with HTTP 503"
    )


def test_backoff_grows_to_cap():
    clock = FakeClock()
    client = ScriptedClient([unavailable() for _ in range(10)])
    wait_until_ready(
        cast(ManagementClient, client), 120, clock=clock, sleep=clock.sleep
    )
    assert clock.sleeps[0] < 1
    assert clock.sleeps == sorted(clock.sleeps)
    assert max(clock.sleeps) == MAX_DELAY


def test_deadline_raises_not_ready_with_last_problem():
    clock = FakeClock()
    client = ScriptedClient([unavailable() for _ in range(1000)])
    with pytest.raises(BrokerNotReady) as caught:
        wait_until_ready(
            cast(ManagementClient, client), 10, clock=clock, sleep=clock.sleep
        )
    assert "within 10 s" in str(caught.value)
    assert "HTTP 503" in str(caught.value)
    assert clock.now <= 10.0 + 1e-9


def test_brief_401_at_boot_is_tolerated():
    clock = FakeClock()
    client = ScriptedClient([AuthenticationFailed("401", status=401), None])
    wait_until_ready(cast(ManagementClient, client), 60, clock=clock, sleep=clock.sleep)
    assert clock.now < AUTH_GRACE


def test_persistent_401_ends_quickly():
    clock = FakeClock()
    client = ScriptedClient(
        [AuthenticationFailed("401", status=401) for _ in range(100)]
    )
    with pytest.raises(AuthenticationFailed):
        wait_until_ready(
            cast(ManagementClient, client), 120, clock=clock, sleep=clock.sleep
        )
    assert AUTH_GRACE <= clock.now < AUTH_GRACE + MAX_DELAY + 1


def test_403_fails_at_once():
    clock = FakeClock()
    client = ScriptedClient([NotAdministrator("403", status=403)])
    with pytest.raises(NotAdministrator):
        wait_until_ready(
            cast(ManagementClient, client), 120, clock=clock, sleep=clock.sleep
        )
    assert clock.sleeps == []
