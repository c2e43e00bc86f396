"""Show, per user, the permissions the broker will get and where they came from.

For an ``mqtt`` block this puts each topic filter next to its routing-key
form and the compiled regexes, so an operator can see why a device may or
may not publish somewhere without reading the compiler.
"""

from __future__ import annotations

from collections.abc import Iterable

from provisioner import mqtt, spec

_WIDTH = 11


def explain_users(users: Iterable[spec.User]) -> str:
    """Return the explanation of every user in ``users``."""
    return "\n\n".join(explain_user(user) for user in users)


def explain_user(user: spec.User) -> str:
    """Return the explanation of one user's grants."""
    lines = [
        f"user {user.name!r}"
        + (f" (tags: {', '.join(user.tags)})" if user.tags else "")
    ]
    if user.mqtt is not None:
        lines += _mqtt_lines(user.name, user.mqtt)
    for permission in user.permissions:
        lines.append(f"  vhost {permission.vhost!r} (hand-written permission)")
        lines += _rows(
            ("configure", permission.configure),
            ("write", permission.write),
            ("read", permission.read),
        )
    for topic in user.topic_permissions:
        lines.append(
            f"  vhost {topic.vhost!r}, exchange {topic.exchange!r} (hand-written topic permission)"
        )
        lines += _rows(("topic write", topic.write), ("topic read", topic.read))
    if len(lines) == 1:
        lines.append("  no permissions: the user cannot connect to any vhost")
    return "\n".join(lines)


def _mqtt_lines(username: str, block: spec.MqttBlock) -> list[str]:
    grant = block.grant(username)
    compiled = mqtt.compile_grant(grant)
    client_ids = grant.client_ids or (username, username + "-*")
    lines = [f"  vhost {block.vhost!r}, exchange {block.exchange!r} (mqtt block)"]
    lines += _rows(("client ids", ", ".join(client_ids)))
    for field, filters in (("publish", block.publish), ("subscribe", block.subscribe)):
        for topic_filter in filters:
            routing = mqtt.filter_to_routing_pattern(topic_filter)
            lines += _rows((field, f"{topic_filter}  ->  routing key {routing}"))
    lines += _rows(
        ("configure", compiled.configure),
        ("write", compiled.write),
        ("read", compiled.read),
        ("topic write", compiled.topic_write),
        ("topic read", compiled.topic_read),
    )
    return lines


def _rows(*pairs: tuple[str, str]) -> list[str]:
    return [
        f"    {label:<{_WIDTH}} {value if value else '(deny)'}"
        for label, value in pairs
    ]
