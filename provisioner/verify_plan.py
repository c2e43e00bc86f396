"""Choose the probes that show whether a broker enforces one user's mqtt block.

For every declared filter this makes one probe that must be allowed, and
for the topics next to it (a sibling level, the parent, another first
level) probes that must be refused. It also adds a wider subscribe filter
and a client id outside the user's ``client_ids``. Expectations follow MQTT
matching rules, computed here independently of the compiler in ``mqtt``,
so a compiler mistake shows up as a surprise on the broker. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from provisioner import mqtt, spec

# Level text used where a filter has a wildcard and a probe needs a topic.
PROBE_LEVEL = "verify"
_SIBLING_SUFFIX = "-verify"
_OTHER_FIRST_LEVEL = "verify-other"


class Expect(StrEnum):
    """Outcome that a probe expects from the broker."""

    ALLOWED = "allowed"
    REFUSED = "refused"


class Action(StrEnum):
    """The MQTT packet a probe sends after CONNECT."""

    CONNECT = "connect"
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"


@dataclass(frozen=True)
class Check:
    """One probe: an action on a topic or filter, with the expected outcome."""

    user: str
    name: str
    action: Action
    topic: str
    client_id: str
    expected: Expect
    qos: int = 1

    @property
    def target(self) -> str:
        """The topic or filter, or the client id when the client id is tested."""
        if self.action is Action.CONNECT or self.name.startswith("client id"):
            return self.client_id
        return self.topic


def plan_checks(username: str, block: spec.MqttBlock) -> list[Check]:
    """Return the probes for one user's block, without duplicates.

    Raises TopicFilterError for a block the compiler rejects.
    """
    grant = block.grant(username)
    mqtt.compile_grant(grant)
    patterns = list(grant.client_ids or (username, username + "-*"))
    client_id = allowed_client_id(patterns)
    publish = [_expand(f, username, client_id) for f in block.publish]
    subscribe = [_expand(f, username, client_id) for f in block.subscribe]

    def check(
        name: str, action: Action, topic: str, expected: Expect, qos: int = 1
    ) -> Check:
        return Check(username, name, action, topic, client_id, expected, qos)

    # The login comes first: when it fails, no other probe can tell anything.
    checks = [check("login", Action.CONNECT, "", Expect.ALLOWED)]
    checks += [
        check("publish", Action.PUBLISH, concrete_topic(f), Expect.ALLOWED)
        for f in publish
    ]
    for topic_filter in subscribe:
        for qos in (0, 1):
            checks.append(
                check(
                    f"subscribe qos{qos}",
                    Action.SUBSCRIBE,
                    topic_filter,
                    Expect.ALLOWED,
                    qos,
                )
            )

    for label, topic in _neighbours(publish):
        if not any(covers(f, topic) for f in publish):
            checks.append(
                check(f"publish, {label}", Action.PUBLISH, topic, Expect.REFUSED)
            )
    if subscribe and not publish:
        topic = concrete_topic(subscribe[0])
        checks.append(
            check("publish, none granted", Action.PUBLISH, topic, Expect.REFUSED)
        )

    for label, topic in _neighbours(subscribe):
        if not any(covers(f, topic) for f in subscribe):
            checks.append(
                check(f"subscribe, {label}", Action.SUBSCRIBE, topic, Expect.REFUSED)
            )
    for topic_filter in subscribe:
        wider = wider_filter(topic_filter)
        if wider is not None and not any(covers(f, wider) for f in subscribe):
            checks.append(
                check(
                    "subscribe, wider filter", Action.SUBSCRIBE, wider, Expect.REFUSED
                )
            )
    if publish and not subscribe:
        topic = concrete_topic(publish[0])
        checks.append(
            check("subscribe, none granted", Action.SUBSCRIBE, topic, Expect.REFUSED)
        )

    if block.subscribe:
        # Only subscribing checks the client id (through the names of the
        # subscription queues), so a publish-only user has no such probe.
        outsider = outside_client_id(patterns)
        topic_filter = _expand(block.subscribe[0], username, outsider)
        checks.append(
            Check(
                username,
                f"client id outside client_ids, subscribe {topic_filter}",
                Action.SUBSCRIBE,
                topic_filter,
                outsider,
                Expect.REFUSED,
            )
        )
    return _unique(checks)


def allowed_client_id(patterns: list[str]) -> str:
    """Return a client id that ``patterns`` allow, preferring a prefix pattern.

    A prefix pattern gives an id of its own (``room-client-verify``), so the
    probe does not take over the session of a device using a listed id.
    """
    for pattern in patterns:
        if pattern.endswith("*"):
            return pattern[:-1] + PROBE_LEVEL
    return patterns[0]


def outside_client_id(patterns: list[str]) -> str:
    """Return a client id that no pattern allows."""
    prefixes = [p[:-1] if p.endswith("*") else p for p in patterns]
    for candidate in ("verify-outside", "0-verify-outside", "~verify-outside"):
        if not any(_client_id_allowed(p, candidate) for p in patterns):
            return candidate
    # Prefix patterns are never empty, so a first character unused by every
    # prefix and pattern gives an id that none of them allows.
    used = {prefix[:1] for prefix in prefixes}
    first = next(c for c in "abcdefghijklmnopqrstuvwxyz0123456789" if c not in used)
    return first + "-verify-outside"


def concrete_topic(topic_filter: str) -> str:
    """Return a topic that ``topic_filter`` matches, with wildcards filled in."""
    return "/".join(
        PROBE_LEVEL if level in ("+", "#") else level
        for level in topic_filter.split("/")
    )


def wider_filter(topic_filter: str) -> str | None:
    """Return the filter one level wider (``a/b`` -> ``a/#``, ``a/#`` -> ``#``)."""
    levels = topic_filter.split("/")
    kept = levels[:-2] if levels[-1] == "#" else levels[:-1]
    wider = "/".join([*kept, "#"])
    return None if wider == topic_filter else wider


def covers(granted: str, requested: str) -> bool:
    """Return whether every topic that ``requested`` matches is matched by ``granted``.

    Both are MQTT filters; a topic is a filter without wildcards. Topics that
    start with ``$`` are left out, since no probe uses one.
    """
    return _covers(granted.split("/"), requested.split("/"), ())


def _covers(
    granted: list[str], requested: list[str], consumed: tuple[str, ...]
) -> bool:
    if granted and granted[0] == "#":
        return True
    if not requested:
        return not granted
    if requested[0] == "#":
        # A `#` also matches its parent topic, which only a `#` in the grant
        # covers. When that parent would be empty (a leading `#` or `/#`)
        # no such topic exists, and the `#` means `+/#`.
        if "/".join(consumed) != "":
            return False
        requested = ["+", "#"]
    if not granted:
        return False
    if requested[0] == "+" and granted[0] != "+":
        return False
    if granted[0] not in ("+", requested[0]):
        return False
    return _covers(granted[1:], requested[1:], (*consumed, requested[0]))


def _neighbours(filters: list[str]) -> list[tuple[str, str]]:
    """Return labelled topics next to the literal prefix of each filter."""
    found: list[tuple[str, str]] = []
    for topic_filter in filters:
        levels = concrete_topic(topic_filter).split("/")
        prefix_length = _literal_prefix_length(topic_filter)
        if prefix_length > 0:
            sibling = list(levels)
            last = sibling[prefix_length - 1]
            sibling[prefix_length - 1] = last + _SIBLING_SUFFIX if last else PROBE_LEVEL
            found.append(("sibling level", "/".join(sibling)))
            parent = "/".join(levels[: prefix_length - 1])
            if parent:
                found.append(("parent level", parent))
        found.append(("other first level", "/".join([_OTHER_FIRST_LEVEL, *levels[1:]])))
        if levels[0] == "" and len(levels) > 1:
            found.append(("no leading slash", "/".join(levels[1:])))
    return found


def _literal_prefix_length(topic_filter: str) -> int:
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if level in ("+", "#"):
            return index
    return len(levels)


def _expand(topic_filter: str, username: str, client_id: str) -> str:
    return topic_filter.replace(mqtt.USERNAME_VARIABLE, username).replace(
        mqtt.CLIENT_ID_VARIABLE, client_id
    )


def _client_id_allowed(pattern: str, client_id: str) -> bool:
    if pattern.endswith("*"):
        return client_id.startswith(pattern[:-1])
    return client_id == pattern


def _unique(checks: list[Check]) -> list[Check]:
    seen: set[tuple[Action, str, str, int]] = set()
    unique: list[Check] = []
    for check in checks:
        key = (check.action, check.topic, check.client_id, check.qos)
        if key not in seen:
            seen.add(key)
            unique.append(check)
    return unique
