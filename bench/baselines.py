"""The ways other tools create the same users, for comparison with the CLI.

- The broker's own definitions import: one ``POST /api/definitions`` with
  pre-hashed passwords, hashed before the clock starts.
- One PUT per object, as rabbitmqadmin-style scripts and Terraform's
  RabbitMQ provider do: user, permission and topic permission per user.
- ``rabbitmqctl add_user``, ``set_permissions`` and ``set_topic_permissions``
  per user, as container entrypoint scripts do. Each call starts an Erlang
  VM, so it is measured on a few users and extrapolated.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import requests

from bench.measure import Sample
from bench.workload import EXCHANGE, VHOST, BenchUser, definitions_document

# Generous, because the broker's import of 5,000 users takes seconds.
REQUEST_TIMEOUT_SECONDS = 300
# The broker keeps working for a moment after a bulk-delete of thousands
# of users. In one comparison on 2 cores, a cold sync of 1,000 users took
# 2.1 s right after the reset and 1.6-1.8 s when started 2 s later.
SETTLE_SECONDS = 2.0


def _url(node: Any, *segments: str) -> str:
    base: str = node.management_url
    return base + "/api/" + "/".join(quote(s, safe="") for s in segments)


def _check(response: requests.Response) -> None:
    if response.status_code not in (200, 201, 204):
        raise RuntimeError(
            f"{response.request.method} {response.url} returned "
            f"{response.status_code}: {response.text[:300]}"
        )


def definitions_import(node: Any, users: list[BenchUser]) -> Sample:
    """POST the users as one definitions document."""
    document = definitions_document(users)
    session = node.session()
    started = time.perf_counter()
    response = session.post(
        _url(node, "definitions"), json=document, timeout=REQUEST_TIMEOUT_SECONDS
    )
    seconds = time.perf_counter() - started
    _check(response)
    return Sample(seconds, 1)


def put_per_object(node: Any, users: list[BenchUser]) -> Sample:
    """PUT each user, permission and topic permission on its own."""
    session = node.session()
    count = 0
    started = time.perf_counter()
    for user in users:
        body = {"password": user.password, "tags": ""}
        _check(session.put(_url(node, "users", user.name), json=body, timeout=30))
        _check(
            session.put(
                _url(node, "permissions", VHOST, user.name),
                json=user.permission,
                timeout=30,
            )
        )
        _check(
            session.put(
                _url(node, "topic-permissions", VHOST, user.name),
                json=user.topic_permission,
                timeout=30,
            )
        )
        count += 3
    return Sample(time.perf_counter() - started, count)


def rabbitmqctl_per_user(node: Any, users: list[BenchUser], sample: int) -> Sample:
    """Run the three rabbitmqctl calls for ``sample`` users; extrapolate to all."""
    measured = users[:sample]
    started = time.perf_counter()
    for user in measured:
        node.rabbitmqctl("add_user", user.name, user.password)
        p = user.permission
        node.rabbitmqctl(
            "set_permissions",
            "-p",
            VHOST,
            user.name,
            p["configure"],
            p["write"],
            p["read"],
        )
        t = user.topic_permission
        node.rabbitmqctl(
            "set_topic_permissions",
            "-p",
            VHOST,
            user.name,
            EXCHANGE,
            t["write"],
            t["read"],
        )
    per_user = (time.perf_counter() - started) / len(measured)
    note = f"estimate: {per_user:.2f} s per user measured on {len(measured)} users"
    return Sample(per_user * len(users), 0, note=note)


def reset(node: Any) -> None:
    """Delete every user but the admin with one bulk-delete, then let it settle."""
    session = node.session()
    response = session.get(_url(node, "users") + "?columns=name", timeout=60)
    _check(response)
    names = [u["name"] for u in response.json() if u["name"] != node.admin_user]
    if names:
        _check(
            session.post(
                _url(node, "users", "bulk-delete"),
                json={"users": names},
                timeout=REQUEST_TIMEOUT_SECONDS,
            )
        )
    time.sleep(SETTLE_SECONDS)
