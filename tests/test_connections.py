"""Which connections a sync closes, and when."""

from __future__ import annotations

from typing import cast

import pytest

from provisioner import runner
from provisioner.client import ManagementClient
from provisioner.connections import (
    CLOSE_REASON,
    close_user_connections,
    users_to_disconnect,
)
from provisioner.errors import ApplyFailed, BrokerUnavailable
from provisioner.plan import Action, Change, Kind
from provisioner.settings import Settings
from provisioner.state import BrokerState


def test_users_to_disconnect_picks_rotations_and_deletions():
    changes = [
        Change(Action.UPDATE, Kind.USER, ("rotated",), ("password",)),
        Change(Action.UPDATE, Kind.USER, ("retagged",), ("tags",)),
        Change(Action.CREATE, Kind.USER, ("new",), ("password",)),
        Change(Action.DELETE, Kind.USER, ("gone",)),
        Change(Action.DELETE, Kind.PERMISSION, ("/", "perm-only")),
    ]
    assert users_to_disconnect(changes) == {"rotated", "gone"}


class FakeClient:
    def __init__(self, listed):
        self.listed = listed
        self.deleted: list[tuple[str, dict[str, str] | None]] = []
        self.gets = 0

    def get(self, path):
        self.gets += 1
        assert path == "/api/connections?columns=name,user"
        return self.listed

    def delete(self, path, *, headers=None):
        self.deleted.append((path, headers))


def test_close_filters_locally_with_one_listing():
    client = FakeClient(
        [
            {"name": "127.0.0.1:1 -> 127.0.0.1:2", "user": "a"},
            {"name": "127.0.0.1:3 -> 127.0.0.1:2", "user": "b"},
            {"name": "127.0.0.1:4 -> 127.0.0.1:2", "user": "a/x"},
        ]
    )
    assert close_user_connections(cast(ManagementClient, client), {"a", "a/x"}) == 2
    assert client.gets == 1
    paths = [path for path, _ in client.deleted]
    assert paths == [
        "/api/connections/127.0.0.1%3A1%20-%3E%20127.0.0.1%3A2",
        "/api/connections/127.0.0.1%3A4%20-%3E%20127.0.0.1%3A2",
    ]
    assert all(headers == {"X-Reason": CLOSE_REASON} for _, headers in client.deleted)


def test_close_without_users_sends_nothing():
    client = FakeClient([])
    assert close_user_connections(cast(ManagementClient, client), set()) == 0
    assert client.gets == 0


@pytest.mark.parametrize("close_fails", [False, True])
def test_failed_apply_still_closes(monkeypatch, close_fails):
    closed: list[set[str]] = []

    def failing_apply(*args, **kwargs):
        raise ApplyFailed("import failed", applied=0, pending=1)

    def record_close(client, users):
        closed.append(users)
        if close_fails:
            raise BrokerUnavailable("broker gone")
        return 0

    monkeypatch.setattr(runner, "apply_plan", failing_apply)
    monkeypatch.setattr(runner, "close_user_connections", record_close)
    changes = [Change(Action.UPDATE, Kind.USER, ("dev1",), ("password",))]
    outcome = runner.PlanOutcome(changes, BrokerState())
    settings = Settings(username="ops", password="x-pw", close_connections=True)
    with pytest.raises(ApplyFailed):
        runner.apply(cast(ManagementClient, None), outcome, settings)
    assert closed == [{"dev1"}]


def test_option_off_closes_nothing(monkeypatch):
    monkeypatch.setattr(runner, "apply_plan", lambda *a, **k: None)
    monkeypatch.setattr(
        runner, "close_user_connections", lambda *a: pytest.fail("closed")
    )
    changes = [Change(Action.UPDATE, Kind.USER, ("dev1",), ("password",))]
    runner.apply(
        cast(ManagementClient, None),
        runner.PlanOutcome(changes, BrokerState()),
        Settings(),
    )
