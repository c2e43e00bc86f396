"""Broker fixtures shared by the test suite.

Tests that take `broker`, `clean_broker` or `cluster` get the ``broker``
marker automatically, so ``pytest -m "not broker"`` runs without RabbitMQ.
Set ``PROVISIONER_TEST_RABBITMQ_ROOT`` to a chroot built by
``scripts/rabbitmq4-chroot.sh`` to run them against RabbitMQ 4.0.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.broker_reset import reset_broker
from tests.rabbitmq_node import RabbitNode, start_cluster

BROKER_FIXTURES = frozenset({"broker", "clean_broker", "cluster"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session")
def broker() -> Iterator[RabbitNode]:
    """A RabbitMQ node shared by the whole session; tests may leave state."""
    with RabbitNode() as node:
        yield node


@pytest.fixture
def clean_broker(broker: RabbitNode) -> RabbitNode:
    """The session node, reset to only the seeded admin and the vhost ``/``."""
    reset_broker(broker)
    return broker


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[RabbitNode]]:
    """Two joined RabbitMQ nodes; the first is the one the second joined."""
    nodes = start_cluster(count=2)
    try:
        yield nodes
    finally:
        for node in reversed(nodes):
            node.cleanup()
