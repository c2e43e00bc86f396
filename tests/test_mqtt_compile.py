"""Tests for the MQTT grant compiler, without a broker.

The property tests compare the compiled regexes with independent oracles:
paho-mqtt's `topic_matches_sub` for publishing, and a level-by-level
coverage check (itself cross-checked by enumerating topics) for
subscribing. Python's `re` replaces Erlang's `re:run`, which searches
unanchored. The compiled regexes are anchored, so `re.search` and
`re.fullmatch` must agree.
"""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from provisioner.mqtt import (
    CompiledGrant,
    MqttGrant,
    TopicFilterError,
    compile_grant,
    filter_to_routing_pattern,
    routing_key_hint,
    validate_filter,
)

# ---------------------------------------------------------------- helpers


def expand_variables(regex: str, username: str, client_id: str) -> str:
    """Substitute the variables the way RabbitMQ 4.2.4+ does: regex-escaped."""
    regex = regex.replace("{username}", re.escape(username))
    return regex.replace("{client_id}", re.escape(client_id))


def topic_routing_key(topic: str) -> str:
    return topic.replace("/", ".")


def request_routing_form(topic_filter: str) -> str:
    levels = ["*" if level == "+" else level for level in topic_filter.split("/")]
    return ".".join(levels)


def broker_matches(regex: str, subject: str) -> bool:
    """Match like Erlang's re:run and check that anchoring makes it exact."""
    searched = re.search(regex, subject) is not None
    full = re.fullmatch(regex, subject) is not None
    assert searched == full, f"{regex!r} is not anchored for {subject!r}"
    return full


def filter_covers(granted: str, requested: str) -> bool:
    """Return whether every topic that `requested` matches is matched by `granted`.

    Walks both filters level by level; written apart from the compiler.
    """
    return _levels_cover(granted.split("/"), requested.split("/"), consumed=[])


def _levels_cover(
    granted: list[str], requested: list[str], *, consumed: list[str]
) -> bool:
    if not granted:
        return not requested

    first = not consumed
    if requested[:1] == ["#"] and "/".join(consumed) == "":
        # Here "#" would also match the empty topic, which cannot exist, so
        # the request means one or more further levels.
        requested = ["+", "#"]

    head = granted[0]
    requested_head = requested[0] if requested else None
    # A wildcard in the first level does not match topics starting with "$",
    # so it covers a literal "$..." level of the request only if equal.
    dollar_literal = (
        first
        and requested_head is not None
        and requested_head not in ("+", "#")
        and requested_head.startswith("$")
    )

    if head == "#":
        return not dollar_literal
    if requested_head is None or requested_head == "#":
        return False
    if head == "+":
        if dollar_literal:
            return False
        return _levels_cover(
            granted[1:], requested[1:], consumed=[*consumed, requested_head]
        )
    if requested_head != head:
        return False
    return _levels_cover(
        granted[1:], requested[1:], consumed=[*consumed, requested_head]
    )


# ------------------------------------------------------- filter validation

VALID_FILTERS = [
    "a",
    "#",
    "+",
    "/",
    "/priv/room/sample",
    "a//b",
    "a/",
    "+/+/#",
    "a/+/c/#",
    "$SYS/broker",
    "devices/{username}/#",
    "cfg/{client_id}",
    "x{username}y/z",
    "caf\u00e9/temp",
]

INVALID_FILTERS = [
    ("", "empty filter"),
    ("a/#/b", "'#' must be the last level"),
    ("#/a", "'#' must be the last level"),
    ("#a", "'#' must be a whole level"),
    ("a/b#", "'#' must be a whole level"),
    ("a+", "'+' must be a whole level"),
    ("a/+b/c", "'+' must be a whole level"),
    ("a/*", "'*' as its own one-level wildcard"),
    ("a*b", "'*' as its own one-level wildcard"),
    ("a.b", "'.' into a level separator"),
    ("a/b.c/d", "'.' into a level separator"),
    ("a\x00b", "NUL"),
    ("{vhost}/a", "braces are allowed only in the variables"),
    ("a/{user}", "braces are allowed only in the variables"),
    ("a/}", "braces are allowed only in the variables"),
    ("a" * 65_536, "65535 UTF-8 bytes"),
]


@pytest.mark.parametrize("topic_filter", VALID_FILTERS)
def test_validate_filter_accepts(topic_filter: str) -> None:
    validate_filter(topic_filter)


@pytest.mark.parametrize(("topic_filter", "reason"), INVALID_FILTERS)
def test_validate_filter_rejects(topic_filter: str, reason: str) -> None:
    with pytest.raises(TopicFilterError) as caught:
        validate_filter(topic_filter, field="subscribe")

    assert reason in caught.value.reason
    assert caught.value.topic_filter == topic_filter
    assert caught.value.field == "subscribe"
    assert str(caught.value).startswith("invalid subscribe entry ")


@pytest.mark.parametrize("field", ["publish", "subscribe"])
def test_compile_grant_names_bad_field(field: str) -> None:
    filters = ("ok/topic", "a/#/b")
    if field == "publish":
        grant = MqttGrant(username="u", publish=filters)
    else:
        grant = MqttGrant(username="u", subscribe=filters)

    with pytest.raises(TopicFilterError) as caught:
        compile_grant(grant)

    assert caught.value.field == field
    assert caught.value.topic_filter == "a/#/b"


INVALID_CLIENT_IDS = [
    ("", "give a client id"),
    ("*", "a bare '*'"),
    ("sensor-*-x", "only a final '*'"),
    ("sensor-??", "only a final '*'"),
    ("a\x00", "NUL"),
]


@pytest.mark.parametrize(("client_id", "reason"), INVALID_CLIENT_IDS)
def test_client_ids_rejected(client_id: str, reason: str) -> None:
    grant = MqttGrant(username="u", client_ids=(client_id,), subscribe=("a",))

    with pytest.raises(TopicFilterError) as caught:
        compile_grant(grant)

    assert caught.value.field == "client_ids"
    assert caught.value.topic_filter == client_id
    assert reason in caught.value.reason


# -------------------------------------------------------------- variables


def test_client_id_variable_rejected_in_publish() -> None:
    grant = MqttGrant(
        username="u",
        client_ids=("u",),
        publish=("out/{client_id}",),
        broker_version=(4, 2, 4),
    )

    with pytest.raises(TopicFilterError) as caught:
        compile_grant(grant)

    assert caught.value.field == "publish"
    assert "any client id" in caught.value.reason


@pytest.mark.parametrize("version", [None, (3, 10, 8), (4, 2, 3)])
def test_unescaped_username_variable_rejected(
    version: tuple[int, int, int] | None,
) -> None:
    grant = MqttGrant(username="a.b", publish=("u/{username}",), broker_version=version)

    with pytest.raises(TopicFilterError) as caught:
        compile_grant(grant)

    assert caught.value.field == "publish"
    assert "before 4.2.4" in caught.value.reason


def test_escaped_username_variable_accepted() -> None:
    grant = MqttGrant(
        username="a.b", publish=("u/{username}",), broker_version=(4, 2, 4)
    )

    compiled = compile_grant(grant)

    assert compiled.topic_write == "^u\\.{username}$"


@pytest.mark.parametrize("client_ids", [(), ("dev-*",), ("dev.1",), ("dev1", "dev(2)")])
def test_unescaped_client_id_variable_rejected(client_ids: tuple[str, ...]) -> None:
    grant = MqttGrant(
        username="dev", client_ids=client_ids, subscribe=("cfg/{client_id}",)
    )

    with pytest.raises(TopicFilterError) as caught:
        compile_grant(grant)

    assert caught.value.field == "subscribe"
    assert "list exact client_ids" in caught.value.reason


def test_exact_client_id_variable_accepted() -> None:
    grant = MqttGrant(
        username="dev", client_ids=("dev1", "dev2"), subscribe=("cfg/{client_id}",)
    )

    compiled = compile_grant(grant)

    assert compiled.topic_read == "^cfg\\.{client_id}$"


def test_variables_kept_verbatim() -> None:
    grant = MqttGrant(
        username="dev7",
        client_ids=("dev7",),
        publish=("devices/{username}/#",),
        subscribe=("devices/{username}/cmd/+", "cfg/x{client_id}y"),
    )

    compiled = compile_grant(grant)

    assert compiled.topic_write == "^devices\\.{username}(\\..*)?$"
    assert compiled.topic_read == (
        "^(devices\\.{username}\\.cmd\\.[^.#]*|cfg\\.x{client_id}y)$"
    )


# ------------------------------------------------------- compiled grants


def example_grant(version: tuple[int, int, int] | None) -> CompiledGrant:
    return compile_grant(
        MqttGrant(
            username="sensor-01",
            publish=("sensors/sensor-01/#",),
            subscribe=("commands/sensor-01/+", "/priv/room/sample"),
            broker_version=version,
        )
    )


def test_example_grant_all_versions() -> None:
    compiled = example_grant(None)

    ids = "(sensor-01|sensor-01-.*)"
    queues = f"mqtt-subscription-{ids}qos[01]"
    assert compiled.vhost == "/"
    assert compiled.exchange == "amq.topic"
    assert compiled.configure == f"^(mqtt-will-{ids}|{queues})$"
    assert compiled.write == f"^(amq\\.topic|{queues})$"
    assert compiled.read == f"^(amq\\.topic|{queues}|mqtt-will-{ids})$"
    assert compiled.topic_write == "^sensors\\.sensor-01(\\..*)?$"
    assert compiled.topic_read == (
        "^(commands\\.sensor-01\\.[^.#]*|\\.priv\\.room\\.sample)$"
    )


def test_example_grant_on_3_10() -> None:
    compiled = example_grant((3, 10, 8))

    queues = "mqtt-subscription-(sensor-01|sensor-01-.*)qos[01]"
    assert compiled.configure == f"^{queues}$"
    assert compiled.write == f"^(amq\\.topic|{queues})$"
    assert compiled.read == f"^(amq\\.topic|{queues})$"


def test_will_queue_from_3_13() -> None:
    before = compile_grant(
        MqttGrant(username="u", publish=("a",), broker_version=(3, 12, 14))
    )
    since = compile_grant(
        MqttGrant(username="u", publish=("a",), broker_version=(3, 13, 0))
    )

    assert before.configure == "^$"
    assert since.configure == "^mqtt-will-(u|u-.*)$"
    assert since.read == "^mqtt-will-(u|u-.*)$"


def test_publish_only_grant() -> None:
    compiled = compile_grant(
        MqttGrant(username="u", publish=("a/#",), broker_version=(3, 10, 8))
    )

    assert compiled.configure == "^$"
    assert compiled.write == "^amq\\.topic$"
    assert compiled.read == "^$"
    assert compiled.topic_read == "^$"


def test_subscribe_only_grant() -> None:
    compiled = compile_grant(MqttGrant(username="u", subscribe=("a/#",)))

    queues = "mqtt-subscription-(u|u-.*)qos[01]"
    assert compiled.configure == f"^{queues}$"
    assert compiled.write == f"^{queues}$"
    assert compiled.read == f"^(amq\\.topic|{queues})$"
    assert compiled.topic_write == "^$"


def test_empty_grant_denies_all() -> None:
    compiled = compile_grant(MqttGrant(username="u"))

    assert compiled.configure == "^$"
    assert compiled.write == "^$"
    assert compiled.read == "^$"
    assert compiled.topic_write == "^$"
    assert compiled.topic_read == "^$"


def test_client_ids_escaped() -> None:
    compiled = compile_grant(
        MqttGrant(
            username="u",
            client_ids=("gw.1", "gw(2)-*"),
            subscribe=("a",),
            exchange="mqtt.x",
        )
    )

    queues = "mqtt-subscription-(gw\\.1|gw\\(2\\)-.*)qos[01]"
    assert compiled.configure == f"^{queues}$"
    assert compiled.read == f"^(mqtt\\.x|{queues})$"
    assert compiled.exchange == "mqtt.x"


def test_client_id_prefix_matches_queues() -> None:
    compiled = compile_grant(MqttGrant(username="sensor-01", subscribe=("a",)))

    for client_id, allowed in [
        ("sensor-01", True),
        ("sensor-01-x", True),
        ("sensor-01-", True),
        ("sensor-012", False),
        ("sensor-02", False),
    ]:
        for qos in (0, 1):
            queue = f"mqtt-subscription-{client_id}qos{qos}"
            assert broker_matches(compiled.configure, queue) is allowed, queue
    assert not broker_matches(compiled.configure, "mqtt-subscription-sensor-01qos2")


def test_duplicate_filters_listed_once() -> None:
    compiled = compile_grant(MqttGrant(username="u", publish=("a", "b", "a")))

    assert compiled.topic_write == "^(a|b)$"


# ------------------------------------------------------- subscribe rules

SUBSCRIBE_CASES = [
    ("commands/sensor-01/#", "commands/sensor-01/+/ack", True),
    ("commands/sensor-01/#", "commands/sensor-01/#", True),
    ("commands/sensor-01/#", "commands/sensor-01", True),
    ("commands/sensor-01/#", "commands/sensor-01/a/b/c", True),
    ("commands/sensor-01/#", "commands/sensor-012", False),
    ("commands/sensor-01/#", "commands/#", False),
    ("commands/sensor-01/+", "commands/sensor-01/x", True),
    ("commands/sensor-01/+", "commands/sensor-01/+", True),
    ("commands/sensor-01/+", "commands/sensor-01/", True),
    ("commands/sensor-01/+", "commands/sensor-01/#", False),
    ("commands/sensor-01/+", "commands/sensor-01", False),
    ("commands/sensor-01/+", "commands/sensor-01/x/y", False),
    ("commands/sensor-01/+", "commands/+/x", False),
    ("/priv/room/sample", "/priv/room/sample", True),
    ("/priv/room/sample", "priv/room/sample", False),
    ("/priv/room/sample", "/priv/room/+", False),
    ("#", "$SYS/x", False),
    ("#", "+/x", True),
    ("+/x", "$SYS/x", False),
]


@pytest.mark.parametrize(("granted", "requested", "allowed"), SUBSCRIBE_CASES)
def test_subscribe_rule(granted: str, requested: str, allowed: bool) -> None:
    compiled = compile_grant(MqttGrant(username="u", subscribe=(granted,)))

    requested_form = filter_to_routing_pattern(requested)
    assert broker_matches(compiled.topic_read, requested_form) is allowed
    assert filter_covers(granted, requested) is allowed


def test_union_of_grants_not_combined() -> None:
    compiled = compile_grant(MqttGrant(username="u", subscribe=("a", "a/+/#")))

    assert broker_matches(compiled.topic_read, "a")
    assert broker_matches(compiled.topic_read, "a.*.#")
    assert not broker_matches(compiled.topic_read, "a.#")


# ---------------------------------------------------------- routing forms

ROUTING_CASES = [
    ("a/b/c", "a.b.c"),
    ("a/+/c", "a.*.c"),
    ("a/#", "a.#"),
    ("/priv/room/sample", ".priv.room.sample"),
    ("a//b/", "a..b."),
    ("+", "*"),
]


@pytest.mark.parametrize(("topic_filter", "expected"), ROUTING_CASES)
def test_filter_to_routing_pattern(topic_filter: str, expected: str) -> None:
    assert filter_to_routing_pattern(topic_filter) == expected


def test_filter_to_routing_pattern_validates() -> None:
    with pytest.raises(TopicFilterError):
        filter_to_routing_pattern("a/#/b")


HINT_CASES = [
    ("^site42/.*", "^site42\\..*"),
    ("^a\\/b$", "^a\\.b$"),
    ("^a/[^/]+/c$", "^a\\.[^.]+\\.c$"),
    ("^a\\.b/c$", "^a\\.b\\.c$"),
    ("^a/b\\", "^a\\.b\\"),
    ("^site42\\..*", None),
]


@pytest.mark.parametrize(("regex", "expected"), HINT_CASES)
def test_routing_key_hint(regex: str, expected: str | None) -> None:
    assert routing_key_hint(regex) == expected


# ------------------------------------------------------ property tests

USERNAMES = ["a", "u-1", "u$1", "u(1)"]
TOPIC_LEVELS = ["", "a", "b", "ab", "$s", *USERNAMES]
GRANT_LEVELS = ["", "a", "b", "+", "{username}"]
REQUEST_LEVELS = ["", "a", "b", "+", "$s", *USERNAMES]


def _join_levels(levels: list[str]) -> str:
    return "/".join(levels)


topics = (
    st.lists(st.sampled_from(TOPIC_LEVELS), min_size=1, max_size=5)
    .map(_join_levels)
    .filter(bool)
)


@st.composite
def topic_filters(draw: st.DrawFn, level_values: list[str], max_levels: int) -> str:
    levels = draw(st.lists(st.sampled_from(level_values), max_size=max_levels))
    if draw(st.booleans()):
        levels.append("#")
    if not levels or levels == [""]:
        levels.append("a")
    return _join_levels(levels)


granted_filters = topic_filters(GRANT_LEVELS, 4)
requested_filters = topic_filters(REQUEST_LEVELS, 4)


@settings(max_examples=3000)
@given(
    granted=st.lists(granted_filters, min_size=1, max_size=3),
    topic=topics,
    username=st.sampled_from(USERNAMES),
)
def test_topic_write_matches_paho(
    granted: list[str], topic: str, username: str
) -> None:
    compiled = compile_grant(
        MqttGrant(username=username, publish=tuple(granted), broker_version=(4, 2, 4))
    )
    regex = expand_variables(compiled.topic_write, username, "unused")

    expected = any(
        topic_matches_sub(f.replace("{username}", username), topic) for f in granted
    )
    assert broker_matches(regex, topic_routing_key(topic)) is expected


@settings(max_examples=3000)
@given(
    granted=st.lists(granted_filters, min_size=1, max_size=3),
    requested=requested_filters,
    username=st.sampled_from(USERNAMES),
)
def test_topic_read_matches_coverage(
    granted: list[str], requested: str, username: str
) -> None:
    compiled = compile_grant(
        MqttGrant(username=username, subscribe=tuple(granted), broker_version=(4, 2, 4))
    )
    regex = expand_variables(compiled.topic_read, username, "unused")

    expected = any(
        filter_covers(f.replace("{username}", username), requested) for f in granted
    )
    assert broker_matches(regex, request_routing_form(requested)) is expected


# Levels for the enumeration: every literal the small filters use, a fresh
# literal that none uses, and a "$" level for the first-level rule.
ENUMERATION_LEVELS = ["", "a", "b", "z", "$s"]


def _enumerated_topics(max_levels: int) -> list[str]:
    found = []
    for size in range(1, max_levels + 1):
        for levels in itertools.product(ENUMERATION_LEVELS, repeat=size):
            topic = _join_levels(list(levels))
            if topic:
                found.append(topic)
    return found


ENUMERATED_TOPICS = _enumerated_topics(4)
small_grant_filters = topic_filters(["", "a", "b", "+"], 2)
small_request_filters = topic_filters(["", "a", "b", "+", "$s"], 2)


@settings(max_examples=400, deadline=None)
@given(granted=small_grant_filters, requested=small_request_filters)
def test_coverage_oracle_by_enumeration(granted: str, requested: str) -> None:
    matched_by_request = [
        t for t in ENUMERATED_TOPICS if topic_matches_sub(requested, t)
    ]
    sampled = all(topic_matches_sub(granted, t) for t in matched_by_request)

    assert filter_covers(granted, requested) is sampled


def test_plus_hash_grant_covers_hash() -> None:
    compiled = compile_grant(MqttGrant(username="u", subscribe=("+/#", "/+/#")))

    assert compiled.topic_read == ("^((?!\\$)[^.#]*(\\..*)?|#|\\.[^.#]*(\\..*)?|\\.#)$")
    assert broker_matches(compiled.topic_read, "#")
    assert broker_matches(compiled.topic_read, ".#")
    assert not broker_matches(compiled.topic_read, "$SYS.#")
