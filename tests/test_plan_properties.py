"""Properties of ``make_plan`` over random declared and live broker states.

``apply_in_memory`` is a small model of the broker written for this test,
independent of ``provisioner.apply``. A create or update merges the declared
object into the live one, as a definitions import does. A delete removes the
object together with what the broker removes with it: a user's or a vhost's
grants. Applying the plan in this model must reach the declared
state on everything the file owns, after which planning again yields nothing.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from provisioner.errors import PlanRejected
from provisioner.passwords import hash_password
from provisioner.plan import Action, Change, Kind, PrunePolicy, make_plan
from provisioner.state import (
    Access,
    BrokerState,
    Password,
    PlainPassword,
    StoredPassword,
    TopicAccess,
    UserState,
    VhostState,
    passwords_equal,
)

USERS = ("alice", "bob", "ops", "sensor/1")
VHOSTS = ("/", "plant-a", "/plant-b")
EXCHANGES = ("amq.topic", "events")
TAGS = ("administrator", "management", "monitoring", "protected")
SECRETS = ("alpha", "beta")
USER_LIMITS = ("max-connections", "max-channels")
VHOST_LIMITS = ("max-connections", "max-queues")
REGEXES = ("", "^$", ".*", "^amq\\.topic$")
LIMIT_VALUES = (-1, 0, 5)
# A fixed salt keeps generated live hashes reproducible between runs.
SALT = b"salt"

# PROVISIONER_TEST_EXAMPLES raises the count for a longer search.
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("PROVISIONER_TEST_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def stored(secret: str) -> StoredPassword:
    return StoredPassword(hash_password(secret, salt=SALT))


# Strategies --------------------------------------------------------------------


def limits(names: tuple[str, ...]) -> st.SearchStrategy[dict[str, int]]:
    return st.dictionaries(
        st.sampled_from(names), st.sampled_from(LIMIT_VALUES), max_size=2
    )


def accesses() -> st.SearchStrategy[Access]:
    regex = st.sampled_from(REGEXES)
    return st.builds(Access, regex, regex, regex)


def topic_accesses() -> st.SearchStrategy[TopicAccess]:
    regex = st.sampled_from(REGEXES)
    return st.builds(TopicAccess, regex, regex)


def declared_passwords() -> st.SearchStrategy[Password]:
    secret = st.sampled_from(SECRETS)
    return st.one_of(
        secret.map(lambda s: PlainPassword(SecretStr(s))),
        secret.map(stored),
    )


@st.composite
def broker_states(draw: Any, *, declared: bool) -> BrokerState:
    """A declared state (references only declared users) or a live one."""
    state = BrokerState()
    vhost_names = draw(st.sets(st.sampled_from(VHOSTS)))
    if not declared:
        # A broker always has the vhost "/".
        vhost_names.add("/")
    for name in sorted(vhost_names):
        description = draw(
            st.sampled_from((None, "one", "two"))
            if declared
            else st.sampled_from(("", "one"))
        )
        state.vhosts[name] = VhostState(name, description, draw(limits(VHOST_LIMITS)))
    for name in sorted(draw(st.sets(st.sampled_from(USERS)))):
        password = (
            draw(declared_passwords())
            if declared
            else draw(st.one_of(st.none(), st.sampled_from(SECRETS).map(stored)))
        )
        tags = frozenset(draw(st.sets(st.sampled_from(TAGS), max_size=2)))
        state.users[name] = UserState(name, tags, password, draw(limits(USER_LIMITS)))
    # Validation only lets a file grant on vhosts it declares, or on "/".
    grant_vhosts = sorted(set(state.vhosts) | {"/"})
    for user in state.users:
        for vhost in draw(st.sets(st.sampled_from(grant_vhosts), max_size=2)):
            state.permissions[(vhost, user)] = draw(accesses())
        for vhost in draw(st.sets(st.sampled_from(grant_vhosts), max_size=1)):
            for exchange in draw(st.sets(st.sampled_from(EXCHANGES), min_size=1)):
                state.topic_permissions[(vhost, user, exchange)] = draw(
                    topic_accesses()
                )
    if not declared:
        _drop_grants_on_missing_vhosts(state)
    return state


def _drop_grants_on_missing_vhosts(state: BrokerState) -> None:
    state.permissions = {
        k: v for k, v in state.permissions.items() if k[0] in state.vhosts
    }
    state.topic_permissions = {
        k: v for k, v in state.topic_permissions.items() if k[0] in state.vhosts
    }


prune_policies = st.builds(
    PrunePolicy,
    users=st.booleans(),
    vhosts=st.booleans(),
    protect=st.frozensets(st.sampled_from(USERS), max_size=1),
    allow_empty=st.booleans(),
)


# The broker model --------------------------------------------------------------


def apply_in_memory(state: BrokerState, changes: list[Change]) -> BrokerState:
    """Return ``state`` after ``changes``, with the broker's merge and delete semantics."""
    result = copy.deepcopy(state)
    for change in changes:
        if change.action == Action.DELETE:
            _delete(result, change)
        else:
            _put(result, change)
    return result


def _put(state: BrokerState, change: Change) -> None:
    if change.kind == Kind.VHOST:
        declared: VhostState = change.value
        current = state.vhosts.get(declared.name, VhostState(declared.name, "", {}))
        description = (
            current.description
            if declared.description is None
            else declared.description
        )
        state.vhosts[declared.name] = VhostState(
            declared.name, description, dict(current.limits)
        )
    elif change.kind == Kind.USER:
        user: UserState = change.value
        current_user = state.users.get(user.name)
        password = current_user.password if current_user is not None else None
        if current_user is None or "password" in change.fields or password is None:
            password = _as_stored(user.password)
        kept_limits = dict(current_user.limits) if current_user is not None else {}
        state.users[user.name] = UserState(user.name, user.tags, password, kept_limits)
    elif change.kind == Kind.PERMISSION:
        assert change.target[0] in state.vhosts, "permission on a missing vhost"
        assert change.target[1] in state.users, "permission for a missing user"
        vhost, user_name = change.target
        state.permissions[(vhost, user_name)] = change.value
    elif change.kind == Kind.TOPIC_PERMISSION:
        assert change.target[0] in state.vhosts, "topic permission on a missing vhost"
        assert change.target[1] in state.users, "topic permission for a missing user"
        vhost, user_name, exchange = change.target
        state.topic_permissions[(vhost, user_name, exchange)] = change.value
    elif change.kind == Kind.USER_LIMIT:
        name, limit = change.target
        state.users[name].limits[limit] = change.value
    elif change.kind == Kind.VHOST_LIMIT:
        name, limit = change.target
        state.vhosts[name].limits[limit] = change.value


def _as_stored(password: Password | None) -> StoredPassword:
    # The broker stores what it is sent; a clear-text password gets a salt.
    if isinstance(password, StoredPassword):
        return password
    assert isinstance(password, PlainPassword)
    return StoredPassword(hash_password(password.secret.get_secret_value()))


def _delete(state: BrokerState, change: Change) -> None:
    if change.kind == Kind.USER:
        name = change.target[0]
        del state.users[name]
        state.permissions = {k: v for k, v in state.permissions.items() if k[1] != name}
        state.topic_permissions = {
            k: v for k, v in state.topic_permissions.items() if k[1] != name
        }
    elif change.kind == Kind.VHOST:
        del state.vhosts[change.target[0]]
        _drop_grants_on_missing_vhosts(state)
    elif change.kind == Kind.PERMISSION:
        # The broker returns 404 for a grant that is already gone, which the
        # client counts as done; the creator grant of a new vhost is one.
        vhost, user_name = change.target
        state.permissions.pop((vhost, user_name), None)
    elif change.kind == Kind.TOPIC_PERMISSION:
        vhost, user_name, exchange = change.target
        del state.topic_permissions[(vhost, user_name, exchange)]
    elif change.kind == Kind.USER_LIMIT:
        name, limit = change.target
        del state.users[name].limits[limit]
    elif change.kind == Kind.VHOST_LIMIT:
        name, limit = change.target
        del state.vhosts[name].limits[limit]


# Properties ----------------------------------------------------------------------


def with_admin(state: BrokerState, login: str, *, add: bool) -> BrokerState:
    """Return ``state`` where the login account, if present or ``add``, has administrator.

    The broker accepts requests only because the login exists with that tag, and a
    file that removes the tag is rejected (tested in test_plan), so the
    other cases are not worth generating.
    """
    result = copy.deepcopy(state)
    current = result.users.get(login)
    if current is None and add:
        result.users[login] = UserState(
            login, frozenset({"administrator"}), stored("alpha")
        )
    elif current is not None and "administrator" not in current.tags:
        tags = current.tags | {"administrator"}
        result.users[login] = UserState(login, tags, current.password, current.limits)
    return result


def plan_or_none(
    declared: BrokerState, live: BrokerState, login: str, prune: PrunePolicy
) -> list[Change] | None:
    """Return the plan, or None when make_plan rejects it for a documented reason."""
    try:
        changes = make_plan(declared, live, login=login, prune=prune)
    except PlanRejected as error:
        event("plan rejected")
        for problem in error.problems:
            assert "declares no users" in problem.message
        return None
    event(f"changes: {min(len(changes), 10)}{'+' if len(changes) >= 10 else ''}")
    return changes


def assert_owned_equal(declared: BrokerState, result: BrokerState) -> None:
    for name, user in declared.users.items():
        actual = result.users[name]
        assert actual.tags == user.tags, name
        assert actual.limits == user.limits, name
        assert passwords_equal(user.password, actual.password), name
    owned = set(declared.users)
    permissions = {k: v for k, v in result.permissions.items() if k[1] in owned}
    assert permissions == declared.permissions
    topics = {k: v for k, v in result.topic_permissions.items() if k[1] in owned}
    assert topics == declared.topic_permissions
    for name, vhost in declared.vhosts.items():
        actual_vhost = result.vhosts[name]
        assert actual_vhost.limits == vhost.limits, name
        if vhost.description is not None:
            assert actual_vhost.description == vhost.description, name


@PROPERTY_SETTINGS
@given(
    declared=broker_states(declared=True),
    live=broker_states(declared=False),
    login=st.sampled_from(USERS),
    prune=prune_policies,
)
def test_plan_reaches_declared_state(
    declared: BrokerState, live: BrokerState, login: str, prune: PrunePolicy
) -> None:
    live = with_admin(live, login, add=True)
    declared = with_admin(declared, login, add=False)
    changes = plan_or_none(declared, live, login, prune)
    if changes is None:
        return
    result = apply_in_memory(live, changes)

    assert_owned_equal(declared, result)
    assert make_plan(declared, result, login=login, prune=prune) == []


@PROPERTY_SETTINGS
@given(
    declared=broker_states(declared=True),
    live=broker_states(declared=False),
    login=st.sampled_from(USERS),
)
def test_undeclared_users_untouched_without_prune(
    declared: BrokerState, live: BrokerState, login: str
) -> None:
    live = with_admin(live, login, add=True)
    declared = with_admin(declared, login, add=False)
    changes = plan_or_none(declared, live, login, PrunePolicy())
    if changes is None:
        return
    result = apply_in_memory(live, changes)

    for name, user in live.users.items():
        if name in declared.users:
            continue
        assert result.users[name] == user
        grants = {k: v for k, v in live.permissions.items() if k[1] == name}
        assert grants == {k: v for k, v in result.permissions.items() if k[1] == name}
    assert all(
        change.action != Action.DELETE or change.kind != Kind.USER for change in changes
    )


@PROPERTY_SETTINGS
@given(
    declared=broker_states(declared=True),
    live=broker_states(declared=False),
    login=st.sampled_from(USERS),
    prune=prune_policies,
)
def test_login_and_protected_never_deleted(
    declared: BrokerState, live: BrokerState, login: str, prune: PrunePolicy
) -> None:
    live = with_admin(live, login, add=True)
    declared = with_admin(declared, login, add=False)
    changes = plan_or_none(declared, live, login, prune)
    if changes is None:
        return
    result = apply_in_memory(live, changes)

    assert login in result.users
    for name, user in live.users.items():
        if "protected" in user.tags or name in prune.protect:
            assert name in result.users, name
    assert "/" in result.vhosts
