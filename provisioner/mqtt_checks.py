"""Whole-file checks of MQTT grants and of hand-written topic permissions.

The compiler in ``mqtt`` looks at one user at a time. This module adds the
checks that need the whole file. An ``mqtt`` block may not share a vhost
with the same user's hand-written permissions, because the broker keeps one
permission per user and vhost and one would silently replace the other. Two
users' client ids may not overlap on one vhost, or one could use the other's
subscription queues. It also warns about topic regexes written with MQTT's ``/``.
"""

from __future__ import annotations

import logging
from itertools import combinations

from provisioner import mqtt, spec
from provisioner.errors import Problem
from provisioner.loader import PathKey, SourceMap

log = logging.getLogger(__name__)


def check_mqtt_blocks(
    users: list[spec.User], origins: list[int], source: SourceMap
) -> list[Problem]:
    """Return the problems of every user's ``mqtt`` block, across users too."""
    problems: list[Problem] = []
    for user, index in zip(users, origins, strict=True):
        if user.mqtt is not None:
            problems += _check_block(user, user.mqtt, ("users", index, "mqtt"), source)
    problems += _client_id_overlaps(users, origins, source)
    return problems


def _check_block(
    user: spec.User, block: spec.MqttBlock, at: PathKey, source: SourceMap
) -> list[Problem]:
    problems = _filter_problems(block, at, source)
    if not problems:
        # Whole-grant rules (variables, client ids) need valid filters.
        try:
            mqtt.compile_grant(block.grant(user.name))
        except mqtt.TopicFilterError as error:
            problems.append(
                Problem(source.where(_entry_path(block, at, error)), str(error))
            )
    for index, permission in enumerate(user.permissions):
        if permission.vhost == block.vhost:
            problems.append(
                Problem(
                    source.where((*at[:-1], "permissions", index, "vhost")),
                    f"user {user.name!r} has both an mqtt block and a hand-written "
                    f"permission on vhost {block.vhost!r}; the broker keeps one "
                    "permission per user and vhost, so remove one of them",
                )
            )
    for index, topic in enumerate(user.topic_permissions):
        if (topic.vhost, topic.exchange) == (block.vhost, block.exchange):
            problems.append(
                Problem(
                    source.where((*at[:-1], "topic_permissions", index)),
                    f"user {user.name!r} has both an mqtt block and a hand-written topic "
                    f"permission on vhost {block.vhost!r}, exchange {block.exchange!r}; "
                    "add the topics to the mqtt block's publish or subscribe lists instead",
                )
            )
    return problems


def _filter_problems(
    block: spec.MqttBlock, at: PathKey, source: SourceMap
) -> list[Problem]:
    # Each filter is checked on its own, so every bad one is reported at once.
    problems = []
    for field in ("publish", "subscribe"):
        for index, topic_filter in enumerate(getattr(block, field)):
            try:
                mqtt.validate_filter(topic_filter, field=field)
            except mqtt.TopicFilterError as error:
                problems.append(Problem(source.where((*at, field, index)), str(error)))
    return problems


def _entry_path(
    block: spec.MqttBlock, at: PathKey, error: mqtt.TopicFilterError
) -> PathKey:
    entries = {
        "publish": block.publish,
        "subscribe": block.subscribe,
        "client_ids": block.client_ids or [],
    }.get(error.field, [])
    if error.topic_filter in entries:
        return (*at, error.field, entries.index(error.topic_filter))
    return (*at, error.field)


def _client_ids(user: spec.User) -> list[str]:
    assert user.mqtt is not None
    return user.mqtt.client_ids or [user.name, user.name + "-*"]


def _client_id_overlaps(
    users: list[spec.User], origins: list[int], source: SourceMap
) -> list[Problem]:
    problems: list[Problem] = []
    blocks = [(u, i) for u, i in zip(users, origins, strict=True) if u.mqtt is not None]
    for (first, first_index), (second, second_index) in combinations(blocks, 2):
        assert first.mqtt is not None
        assert second.mqtt is not None
        if first.mqtt.vhost != second.mqtt.vhost:
            continue
        shared = _overlap(_client_ids(first), _client_ids(second))
        if shared is not None:
            problems.append(
                Problem(
                    source.where(("users", second_index, "mqtt")),
                    f"client ids of users {first.name!r} (users[{first_index}]) and "
                    f"{second.name!r} overlap on vhost {first.mqtt.vhost!r} "
                    f"({shared[0]!r} and {shared[1]!r}), so one could use the other's "
                    "subscription queues; list distinct client_ids for both",
                )
            )
    return problems


def _overlap(first: list[str], second: list[str]) -> tuple[str, str] | None:
    for left in first:
        for right in second:
            if _patterns_overlap(left, right):
                return left, right
    return None


def _patterns_overlap(left: str, right: str) -> bool:
    # A pattern is a literal client id or a prefix followed by "*".
    left_prefix, left_wild = left.removesuffix("*"), left.endswith("*")
    right_prefix, right_wild = right.removesuffix("*"), right.endswith("*")
    if left_wild and right_wild:
        return left_prefix.startswith(right_prefix) or right_prefix.startswith(
            left_prefix
        )
    if left_wild:
        return right.startswith(left_prefix)
    if right_wild:
        return left.startswith(right_prefix)
    return left == right


def warn_slash_topics(
    users: list[spec.User], origins: list[int], source: SourceMap
) -> None:
    """Log a warning for topic regexes that contain MQTT's ``/``.

    The broker matches topic permissions against routing keys, where an MQTT
    topic's ``/`` is already ``.``, so such a regex never matches.
    """
    for user, index in zip(users, origins, strict=True):
        for number, topic in enumerate(user.topic_permissions):
            for field in ("write", "read"):
                regex = getattr(topic, field)
                hint = mqtt.routing_key_hint(regex)
                if hint is None:
                    continue
                where = source.where(
                    ("users", index, "topic_permissions", number, field)
                )
                log.warning(
                    "%s: topic regex %r contains '/', but the broker matches routing keys, "
                    "where MQTT's '/' is '.'; write %s instead, or use an mqtt block with topic filters",
                    where,
                    regex,
                    hint,
                )
