"""Definitions imports are split by user, each user's grants with it."""

from __future__ import annotations

from provisioner.apply import import_chunks
from provisioner.plan import Action, Change, Kind
from provisioner.state import Access, TopicAccess, VhostState


def _user_changes(name: str) -> list[Change]:
    return [
        Change(Action.CREATE, Kind.USER, (name,), ("password",)),
        Change(Action.CREATE, Kind.PERMISSION, ("/", name), (), Access("", "", "")),
        Change(
            Action.CREATE,
            Kind.TOPIC_PERMISSION,
            ("/", name, "amq.topic"),
            (),
            TopicAccess("", ""),
        ),
        Change(Action.CREATE, Kind.USER_LIMIT, (name, "max-connections"), (), 1),
    ]


def test_chunks_keep_grants_with_user() -> None:
    vhost = Change(Action.CREATE, Kind.VHOST, ("v",), (), VhostState("v"))
    batch = [vhost]
    for index in range(5):
        batch += _user_changes(f"u{index}")
    chunks = import_chunks(batch, users_per_chunk=2)
    assert [len(chunk) for chunk in chunks] == [9, 8, 4]
    assert chunks[0][0] is vhost
    for chunk in chunks:
        users = {c.target[0] for c in chunk if c.kind == Kind.USER}
        granted = {c.target[1] for c in chunk if c.kind == Kind.PERMISSION}
        assert granted == users


def test_chunks_of_vhosts_only() -> None:
    vhost = Change(Action.CREATE, Kind.VHOST, ("v",), (), VhostState("v"))
    assert import_chunks([vhost]) == [[vhost]]
    assert import_chunks([]) == []
