"""One normalised model of broker state, for both the declared and the live side.

The plan compares two ``BrokerState`` values, so both sides are reduced to the
same shapes: tags as sets, limits as plain dicts keyed by the broker's names,
permissions keyed by (vhost, user). The live side is read in two requests
whatever the number of users. ``GET /api/definitions`` contains users with
their hashes, tags and limits, permissions, topic permissions and vhost
limits. ``GET /api/vhosts`` adds the descriptions that 3.x leaves out of the
definitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from provisioner import redact
from provisioner.client import ManagementClient, api_path
from provisioner.passwords import HashingAlgorithm, password_matches

VHOST_LIMITS_COMPONENT = "vhost-limits"


@dataclass(frozen=True)
class Access:
    """Configure, write and read regexes of one user on one vhost."""

    configure: str
    write: str
    read: str


@dataclass(frozen=True)
class TopicAccess:
    """Topic write and read regexes of one user on one vhost and exchange."""

    write: str
    read: str


@dataclass(frozen=True)
class StoredPassword:
    """A password as the broker stores it; the hash is kept out of reprs."""

    password_hash: str = field(repr=False)
    algorithm: HashingAlgorithm = HashingAlgorithm.SHA256


@dataclass(frozen=True)
class PlainPassword:
    """A declared clear-text password, hashed locally before it is sent.

    ``algorithm`` is used whenever the password is written. With
    ``algorithm_declared`` a stored hash of another algorithm counts as a
    change too, so an explicit ``hashing_algorithm`` migrates old hashes.
    """

    secret: SecretStr
    algorithm: HashingAlgorithm = HashingAlgorithm.SHA256
    algorithm_declared: bool = False


Password = StoredPassword | PlainPassword


@dataclass(frozen=True)
class UserState:
    """A user's own attributes; grants are kept in ``BrokerState``."""

    name: str
    tags: frozenset[str]
    password: Password | None
    limits: dict[str, int] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class VhostState:
    """A vhost; a ``description`` of None means the file does not manage it."""

    name: str
    description: str | None = None
    limits: dict[str, int] = field(default_factory=dict, hash=False)


@dataclass
class BrokerState:
    """Users, vhosts and grants, declared or live."""

    vhosts: dict[str, VhostState] = field(default_factory=dict)
    users: dict[str, UserState] = field(default_factory=dict)
    permissions: dict[tuple[str, str], Access] = field(default_factory=dict)
    topic_permissions: dict[tuple[str, str, str], TopicAccess] = field(
        default_factory=dict
    )
    version: str = ""


def passwords_equal(declared: Password | None, live: Password | None) -> bool:
    """Tell whether the broker already stores the declared password."""
    if declared is None or live is None:
        return declared is live
    if isinstance(live, PlainPassword):
        raise TypeError("the live side always contains stored hashes")
    if isinstance(declared, StoredPassword):
        return declared == live
    if declared.algorithm_declared and declared.algorithm != live.algorithm:
        return False
    return password_matches(
        declared.secret.get_secret_value(), live.password_hash, live.algorithm
    )


def read_live_state(client: ManagementClient) -> BrokerState:
    """Read users, vhosts and grants from the broker in two requests."""
    definitions = client.get(api_path("definitions"))
    vhosts = client.get(api_path("vhosts") + "?columns=name,description")
    state = state_from_definitions(definitions, vhosts)
    # Stored hashes are secrets too; registering them keeps them out of any
    # message that echoes a broker response.
    for user in state.users.values():
        if isinstance(user.password, StoredPassword):
            redact.register(user.password.password_hash)
    return state


def state_from_definitions(
    definitions: dict[str, Any], vhosts: list[dict[str, Any]]
) -> BrokerState:
    """Build the live state from ``/api/definitions`` and ``/api/vhosts`` bodies."""
    state = BrokerState(version=str(definitions.get("rabbitmq_version", "")))
    limits = _vhost_limits(definitions.get("parameters", []))
    for entry in vhosts:
        name = entry["name"]
        state.vhosts[name] = VhostState(
            name, entry.get("description") or "", limits.get(name, {})
        )
    for entry in definitions.get("users", []):
        state.users[entry["name"]] = _user(entry)
    for entry in definitions.get("permissions", []):
        key = (entry["vhost"], entry["user"])
        state.permissions[key] = Access(
            entry["configure"], entry["write"], entry["read"]
        )
    for entry in definitions.get("topic_permissions", []):
        topic_key = (entry["vhost"], entry["user"], entry["exchange"])
        state.topic_permissions[topic_key] = TopicAccess(entry["write"], entry["read"])
    return state


def _user(entry: dict[str, Any]) -> UserState:
    stored = entry.get("password_hash") or ""
    password = (
        StoredPassword(
            stored, HashingAlgorithm.from_broker(entry.get("hashing_algorithm"))
        )
        if stored
        else None
    )
    tags = entry.get("tags") or []
    if isinstance(tags, str):
        tags = tags.split(",")
    limits = {
        str(name): int(value) for name, value in (entry.get("limits") or {}).items()
    }
    return UserState(entry["name"], frozenset(t for t in tags if t), password, limits)


def _vhost_limits(parameters: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for parameter in parameters:
        if parameter.get("component") == VHOST_LIMITS_COMPONENT:
            value = parameter.get("value") or {}
            found[parameter["vhost"]] = {str(k): int(v) for k, v in value.items()}
    return found
