"""Compile a validated ``UsersFile`` into the declared ``BrokerState``.

This is where password sources are resolved (files read, hashes parsed) and
where every declared secret is registered for redaction, so nothing after
this point can print one by accident.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from provisioner import mqtt, redact, spec
from provisioner.passwords import HashingAlgorithm
from provisioner.state import (
    Access,
    BrokerState,
    Password,
    PlainPassword,
    StoredPassword,
    TopicAccess,
    UserState,
    VhostState,
)
from provisioner.validate import read_password_file


def declared_state(users_file: spec.UsersFile, base_dir: Path) -> BrokerState:
    """Return the broker state that ``users_file`` declares."""
    state = BrokerState()
    for vhost in users_file.vhosts:
        state.vhosts[vhost.name] = VhostState(
            vhost.name, vhost.description, spec.limit_values(vhost.limits)
        )
    for user in users_file.users:
        state.users[user.name] = UserState(
            user.name,
            frozenset(user.tags),
            _password(user, base_dir),
            spec.limit_values(user.limits),
        )
        _add_grants(state, user)
    return state


def _add_grants(state: BrokerState, user: spec.User) -> None:
    if user.mqtt is not None:
        compiled = mqtt.compile_grant(user.mqtt.grant(user.name))
        state.permissions[(compiled.vhost, user.name)] = Access(
            compiled.configure, compiled.write, compiled.read
        )
        state.topic_permissions[(compiled.vhost, user.name, compiled.exchange)] = (
            TopicAccess(compiled.topic_write, compiled.topic_read)
        )
    for permission in user.permissions:
        state.permissions[(permission.vhost, user.name)] = Access(
            permission.configure, permission.write, permission.read
        )
    for topic in user.topic_permissions:
        state.topic_permissions[(topic.vhost, user.name, topic.exchange)] = TopicAccess(
            topic.write, topic.read
        )


def _password(user: spec.User, base_dir: Path) -> Password:
    algorithm = HashingAlgorithm.from_short_name(user.hashing_algorithm)
    if user.password_hash is not None:
        value = user.password_hash.get_secret_value()
        redact.register(value)
        return StoredPassword(value, algorithm)
    if user.password_file is not None:
        secret = SecretStr(read_password_file(user.password_file, base_dir))
    else:
        assert user.password is not None, "validation guarantees one password source"
        secret = user.password
    redact.register(secret.get_secret_value())
    declared = "hashing_algorithm" in user.model_fields_set
    return PlainPassword(secret, algorithm, declared)
