"""The plan is a pure function of declared and live state."""

import pytest
from pydantic import SecretStr

from provisioner.errors import PlanRejected
from provisioner.passwords import HashingAlgorithm, hash_password
from provisioner.plan import Action, Kind, PrunePolicy, make_plan
from provisioner.state import (
    Access,
    BrokerState,
    PlainPassword,
    StoredPassword,
    TopicAccess,
    UserState,
    VhostState,
)

ADMIN = "ops"


def plain(password: str) -> PlainPassword:
    return PlainPassword(SecretStr(password))


def stored(password: str) -> StoredPassword:
    return StoredPassword(hash_password(password), HashingAlgorithm.SHA256)


def live_state(**users: UserState) -> BrokerState:
    state = BrokerState()
    state.vhosts["/"] = VhostState("/", "Default virtual host")
    state.users[ADMIN] = UserState(ADMIN, frozenset({"administrator"}), stored("admin"))
    state.users.update(users)
    return state


def declared_with(*users: UserState) -> BrokerState:
    state = BrokerState()
    for user in users:
        state.users[user.name] = user
    return state


def test_new_user_created_with_grants():
    declared = declared_with(
        UserState("s1", frozenset(), plain("pw"), {"max-connections": 2})
    )
    declared.vhosts["t"] = VhostState("t", "Sensors")
    declared.permissions[("t", "s1")] = Access("^$", "^amq\\.topic$", "^$")
    declared.topic_permissions[("t", "s1", "amq.topic")] = TopicAccess("^a$", "")
    changes = make_plan(declared, live_state(), login=ADMIN)
    assert [(c.action, c.kind) for c in changes] == [
        (Action.CREATE, Kind.VHOST),
        (Action.CREATE, Kind.USER),
        (Action.CREATE, Kind.PERMISSION),
        (Action.CREATE, Kind.TOPIC_PERMISSION),
        (Action.CREATE, Kind.USER_LIMIT),
    ]


def test_matching_state_gives_empty_plan():
    live = live_state(
        s1=UserState("s1", frozenset({"a", "b"}), stored("pw"), {"max-channels": 4})
    )
    live.permissions[("/", "s1")] = Access("", "x", "")
    declared = declared_with(
        UserState("s1", frozenset({"b", "a"}), plain("pw"), {"max-channels": 4})
    )
    declared.permissions[("/", "s1")] = Access("", "x", "")
    assert make_plan(declared, live, login=ADMIN) == []


def test_changed_password_is_only_change():
    live = live_state(s1=UserState("s1", frozenset(), stored("alpha")))
    declared = declared_with(UserState("s1", frozenset(), plain("beta")))
    changes = make_plan(declared, live, login=ADMIN)
    assert len(changes) == 1
    assert changes[0].action == Action.UPDATE
    assert changes[0].fields == ("password",)


def test_declared_hash_compared_exactly():
    hashed = stored("pw")
    live = live_state(s1=UserState("s1", frozenset(), hashed))
    declared = declared_with(UserState("s1", frozenset(), hashed))
    assert make_plan(declared, live, login=ADMIN) == []


def test_tags_compared_as_sets():
    live = live_state(s1=UserState("s1", frozenset({"management"}), stored("pw")))
    declared = declared_with(UserState("s1", frozenset({"monitoring"}), plain("pw")))
    (change,) = make_plan(declared, live, login=ADMIN)
    assert change.fields == ("tags",)


def test_removed_permission_deleted_on_that_vhost_only():
    live = live_state(s1=UserState("s1", frozenset(), stored("pw")))
    live.permissions[("/", "s1")] = Access("", "", "")
    live.permissions[("t", "s1")] = Access("", "", "")
    declared = declared_with(UserState("s1", frozenset(), plain("pw")))
    declared.permissions[("/", "s1")] = Access("", "", "")
    (change,) = make_plan(declared, live, login=ADMIN)
    assert change.action == Action.DELETE
    assert change.target == ("t", "s1")


def test_undeclared_users_untouched_without_prune():
    live = live_state(other=UserState("other", frozenset(), stored("pw")))
    live.permissions[("/", "other")] = Access(".*", ".*", ".*")
    assert make_plan(declared_with(), live, login=ADMIN) == []


def test_removed_limit_cleared():
    live = live_state(
        s1=UserState("s1", frozenset(), stored("pw"), {"max-connections": 2})
    )
    declared = declared_with(UserState("s1", frozenset(), plain("pw")))
    (change,) = make_plan(declared, live, login=ADMIN)
    assert (change.action, change.kind, change.target) == (
        Action.DELETE,
        Kind.USER_LIMIT,
        ("s1", "max-connections"),
    )


def test_prune_spares_login_and_protected():
    live = live_state(
        guest=UserState("guest", frozenset({"administrator"}), stored("guest")),
        old=UserState("old", frozenset(), stored("pw")),
        keep=UserState("keep", frozenset(), stored("pw")),
    )
    declared = declared_with(UserState("new", frozenset(), plain("pw")))
    policy = PrunePolicy(users=True, protect=frozenset({"keep"}))
    changes = make_plan(declared, live, login=ADMIN, prune=policy)
    deleted = [c.target[0] for c in changes if c.action == Action.DELETE]
    assert deleted == ["guest", "old"]
    assert changes[-1].action == Action.DELETE


def test_prune_with_no_users_refused():
    with pytest.raises(PlanRejected) as caught:
        make_plan(
            declared_with(), live_state(), login=ADMIN, prune=PrunePolicy(users=True)
        )
    assert "allow_empty" in str(caught.value)


def test_prune_empty_allowed_explicitly_still_spares_login():
    live = live_state(s1=UserState("s1", frozenset(), stored("pw")))
    policy = PrunePolicy(users=True, allow_empty=True)
    changes = make_plan(declared_with(), live, login=ADMIN, prune=policy)
    assert [c.target for c in changes] == [("s1",)]


def test_demoting_login_refused():
    declared = declared_with(
        UserState(ADMIN, frozenset({"management"}), plain("admin"))
    )
    with pytest.raises(PlanRejected) as caught:
        make_plan(declared, live_state(), login=ADMIN)
    assert "administrator" in str(caught.value)


def test_vhosts_never_deleted_without_prune():
    live = live_state()
    live.vhosts["old"] = VhostState("old")
    assert make_plan(declared_with(), live, login=ADMIN) == []


def test_vhost_prune_keeps_root():
    live = live_state()
    live.vhosts["old"] = VhostState("old")
    declared = declared_with(UserState("s1", frozenset(), plain("pw")))
    declared.users["s1"] = UserState("s1", frozenset(), plain("pw"))
    policy = PrunePolicy(vhosts=True)
    deletions = [
        c
        for c in make_plan(declared, live, login=ADMIN, prune=policy)
        if c.action == Action.DELETE
    ]
    assert [c.target for c in deletions] == [("old",)]


def test_omitted_description_left_alone():
    live = live_state()
    declared = declared_with()
    declared.vhosts["/"] = VhostState("/", None)
    assert make_plan(declared, live, login=ADMIN) == []


def test_describe_never_contains_password():
    declared = declared_with(UserState("s1", frozenset(), plain("sentinel-secret")))
    changes = make_plan(declared, live_state(), login=ADMIN)
    assert all("sentinel-secret" not in c.describe() for c in changes)
    assert all("sentinel-secret" not in repr(c) for c in changes)


def test_declared_algorithm_mismatch_updates():
    from provisioner.state import passwords_equal

    live = StoredPassword(
        hash_password("pw", HashingAlgorithm.SHA512), HashingAlgorithm.SHA512
    )
    implicit = PlainPassword(SecretStr("pw"))
    explicit = PlainPassword(SecretStr("pw"), HashingAlgorithm.SHA256, True)
    same = PlainPassword(SecretStr("pw"), HashingAlgorithm.SHA512, True)
    assert passwords_equal(implicit, live)
    assert not passwords_equal(explicit, live)
    assert passwords_equal(same, live)


def test_new_vhost_drops_creator_grant():
    declared = declared_with(
        UserState(ADMIN, frozenset({"administrator"}), plain("admin"))
    )
    declared.vhosts["nv"] = VhostState("nv")
    changes = make_plan(declared, live_state(), login=ADMIN)
    deletions = [c for c in changes if c.action == Action.DELETE]
    assert [(c.kind, c.target) for c in deletions] == [(Kind.PERMISSION, ("nv", ADMIN))]
