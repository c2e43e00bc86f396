"""Removing the default guest account, and never deleting the login."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from provisioner.errors import PlanRejected
from provisioner.passwords import hash_password
from provisioner.plan import Action, Change, Kind, PrunePolicy, make_plan
from provisioner.state import (
    BrokerState,
    PlainPassword,
    StoredPassword,
    UserState,
    VhostState,
)

ADMIN_TAGS = frozenset({"administrator"})


def user(name: str, tags: frozenset[str] = frozenset()) -> UserState:
    return UserState(name, tags, StoredPassword(hash_password(name + "-pw")))


def declared(name: str, tags: frozenset[str] = frozenset()) -> UserState:
    return UserState(name, tags, PlainPassword(SecretStr(name + "-pw")))


def state(*users: UserState) -> BrokerState:
    result = BrokerState()
    result.vhosts["/"] = VhostState("/", "")
    result.users = {u.name: u for u in users}
    return result


def guest_deletions(changes: list[Change]) -> list[Change]:
    return [
        c
        for c in changes
        if c.kind == Kind.USER and c.action == Action.DELETE and c.target == ("guest",)
    ]


def test_guest_removed_when_live_admin_exists():
    live = state(user("ops", ADMIN_TAGS), user("guest", ADMIN_TAGS))
    changes = make_plan(state(), live, login="ops", remove_guest=True)
    assert len(guest_deletions(changes)) == 1


def test_guest_removed_when_admin_declared():
    live = state(user("guest", ADMIN_TAGS), user("ops"))
    wanted = state(declared("root", ADMIN_TAGS))
    changes = make_plan(wanted, live, login="ops", remove_guest=True)
    assert len(guest_deletions(changes)) == 1


def test_guest_kept_without_option():
    live = state(user("ops", ADMIN_TAGS), user("guest", ADMIN_TAGS))
    assert guest_deletions(make_plan(state(), live, login="ops")) == []


def test_guest_kept_when_logging_in_as_guest():
    live = state(user("ops", ADMIN_TAGS), user("guest", ADMIN_TAGS))
    changes = make_plan(state(), live, login="guest", remove_guest=True)
    assert guest_deletions(changes) == []


def test_guest_kept_without_other_admin():
    live = state(user("ops", frozenset({"management"})), user("guest", ADMIN_TAGS))
    changes = make_plan(state(), live, login="ops", remove_guest=True)
    assert guest_deletions(changes) == []


def test_guest_kept_when_other_admin_demoted():
    live = state(
        user("ops", frozenset({"management"})),
        user("old-admin", ADMIN_TAGS),
        user("guest", ADMIN_TAGS),
    )
    wanted = state(declared("old-admin", frozenset({"management"})))
    changes = make_plan(wanted, live, login="ops", remove_guest=True)
    assert guest_deletions(changes) == []


def test_guest_kept_when_declared():
    live = state(user("ops", ADMIN_TAGS), user("guest", ADMIN_TAGS))
    wanted = state(declared("guest"))
    changes = make_plan(wanted, live, login="ops", remove_guest=True)
    assert guest_deletions(changes) == []


def test_guest_kept_when_protected():
    live = state(user("ops", ADMIN_TAGS), user("guest", ADMIN_TAGS))
    prune = PrunePolicy(protect=frozenset({"guest"}))
    changes = make_plan(state(), live, login="ops", prune=prune, remove_guest=True)
    assert guest_deletions(changes) == []


def test_guest_deleted_once_with_prune():
    live = state(user("ops", ADMIN_TAGS), user("guest", ADMIN_TAGS), user("x"))
    wanted = state(declared("y"))
    prune = PrunePolicy(users=True)
    changes = make_plan(wanted, live, login="ops", prune=prune, remove_guest=True)
    assert len(guest_deletions(changes)) == 1


def test_guest_deletion_first_of_deletions():
    live = state(user("ops", ADMIN_TAGS), user("guest", ADMIN_TAGS), user("a"))
    wanted = state(declared("y"))
    changes = make_plan(
        wanted, live, login="ops", prune=PrunePolicy(users=True), remove_guest=True
    )
    user_deletions = [
        c for c in changes if c.kind == Kind.USER and c.action == Action.DELETE
    ]
    assert user_deletions[0].target == ("guest",)
    assert [c.target for c in user_deletions[1:]] == [("a",)]


@pytest.mark.parametrize("remove_guest", [False, True])
def test_prune_never_deletes_login(remove_guest):
    live = state(user("ops", ADMIN_TAGS), user("guest", ADMIN_TAGS), user("s1"))
    wanted = state(declared("s2"))
    changes = make_plan(
        wanted,
        live,
        login="guest",
        prune=PrunePolicy(users=True),
        remove_guest=remove_guest,
    )
    deleted = {c.target[0] for c in changes if c.action == Action.DELETE}
    assert "guest" not in deleted
    assert deleted == {"ops", "s1"}


def test_login_deletion_rejected(monkeypatch):
    from provisioner import plan

    def prune_everything(declared, live, login, prune):
        return [Change(Action.DELETE, Kind.USER, (name,)) for name in live.users]

    monkeypatch.setattr(plan, "_prune", prune_everything)
    live = state(user("ops", ADMIN_TAGS))
    with pytest.raises(PlanRejected, match="logs in with"):
        make_plan(state(declared("x")), live, login="ops")


@pytest.mark.parametrize(
    ("username", "password", "expected"),
    [
        (None, None, "logging in as 'guest'"),
        ("ops", "guest", "well-known password"),
    ],
)
def test_connect_warns_about_guest(caplog, username, password, expected):
    from provisioner.runner import connect
    from provisioner.settings import Settings

    settings = Settings(username=username, password=password)
    with caplog.at_level("WARNING"):
        connect(settings)
    assert expected in caplog.text


def test_connect_quiet_for_strong_login(caplog):
    from provisioner.runner import connect
    from provisioner.settings import Settings

    with caplog.at_level("WARNING"):
        connect(Settings(username="ops", password="a-strong-one"))
    assert caplog.records == []


def test_guest_name_not_masked():
    from provisioner import redact

    redact.register_basic_auth("guest", "guest")
    assert redact.redact("user 'guest' was rejected") == "user 'guest' was rejected"
