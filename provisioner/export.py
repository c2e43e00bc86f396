"""Write a users.yaml that describes the live broker, for adopting an existing one.

The export carries every user's stored hash (``password_hash`` with its
``hashing_algorithm``) instead of a password, so syncing it back changes
nothing. Hashes are secrets too: the file is created with mode 0600 and the
hashes never reach a log line. Every string value is written double-quoted,
so YAML 1.1 cannot read a name like ``no``, ``0123`` or ``1e3`` as another
type, and ``${`` is escaped so that loading does not expand it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from provisioner import redact, spec
from provisioner.client import ManagementClient
from provisioner.state import BrokerState, StoredPassword, read_live_state

log = logging.getLogger(__name__)

FILE_MODE = 0o600
_USER_LIMITS = ("max-connections", "max-channels")
_VHOST_LIMITS = ("max-connections", "max-queues")


class Quoted(str):
    """A string value that the dumper always writes double-quoted."""

    __slots__ = ()


class _Dumper(yaml.SafeDumper):
    pass


def _represent_quoted(dumper: yaml.SafeDumper, value: Quoted) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style='"')


_Dumper.add_representer(Quoted, _represent_quoted)


def quoted(text: str) -> Quoted:
    """Return ``text`` escaped for interpolation (``${`` as ``$${``) and quoted."""
    return Quoted(text.replace("${", "$${"))


def export_document(client: ManagementClient) -> dict[str, Any]:
    """Read the broker and return the users file document that describes it."""
    return document_from_state(read_live_state(client))


def document_from_state(live: BrokerState) -> dict[str, Any]:
    """Build the users file document for ``live``; see the module docstring."""
    vhosts = [_vhost(live, name) for name in sorted(live.vhosts)]
    users = []
    for name in sorted(live.users):
        entry = _user(live, name)
        if entry is not None:
            users.append(entry)
    defaults = spec.Prune()
    prune = {"users": defaults.users, "vhosts": defaults.vhosts}
    return {"vhosts": vhosts, "users": users, "prune": prune}


def _vhost(live: BrokerState, name: str) -> dict[str, Any]:
    vhost = live.vhosts[name]
    entry: dict[str, Any] = {"name": quoted(name)}
    if vhost.description:
        entry["description"] = quoted(vhost.description)
    limits = _limits(vhost.limits, _VHOST_LIMITS, f"vhost {name!r}")
    if limits:
        entry["limits"] = limits
    return entry


def _user(live: BrokerState, name: str) -> dict[str, Any] | None:
    user = live.users[name]
    if not isinstance(user.password, StoredPassword):
        log.warning(
            "user %r has no password (it may log in by certificate or another "
            "backend); users.yaml cannot declare that, so it is left out",
            name,
        )
        return None
    redact.register(user.password.password_hash)
    entry: dict[str, Any] = {
        "name": quoted(name),
        "password_hash": quoted(user.password.password_hash),
        "hashing_algorithm": quoted(user.password.algorithm.short_name),
        "tags": [quoted(tag) for tag in sorted(user.tags)],
    }
    limits = _limits(user.limits, _USER_LIMITS, f"user {name!r}")
    if limits:
        entry["limits"] = limits
    entry["permissions"] = _permissions(live, name)
    entry["topic_permissions"] = _topic_permissions(live, name)
    return entry


def _limits(
    values: dict[str, int], known: tuple[str, ...], owner: str
) -> dict[str, int]:
    for limit in sorted(set(values) - set(known)):
        log.warning(
            "%s has limit %r, which users.yaml cannot declare; it is left out, "
            "so a sync of this export would remove it",
            owner,
            limit,
        )
    return {limit: values[limit] for limit in known if limit in values}


def _permissions(live: BrokerState, user: str) -> list[dict[str, Any]]:
    return [
        {
            "vhost": quoted(vhost),
            "configure": quoted(access.configure),
            "write": quoted(access.write),
            "read": quoted(access.read),
        }
        for (vhost, name), access in sorted(live.permissions.items())
        if name == user
    ]


def _topic_permissions(live: BrokerState, user: str) -> list[dict[str, Any]]:
    return [
        {
            "vhost": quoted(vhost),
            "exchange": quoted(exchange),
            "write": quoted(access.write),
            "read": quoted(access.read),
        }
        for (vhost, name, exchange), access in sorted(live.topic_permissions.items())
        if name == user
    ]


def render(document: dict[str, Any]) -> str:
    """Return ``document`` as YAML text with a header saying it contains hashes."""
    header = (
        "# Exported from the live broker. It contains password hashes, including\n"
        "# the administrator's: keep it as secret as the passwords themselves.\n"
    )
    body = yaml.dump(
        document,
        Dumper=_Dumper,
        allow_unicode=True,
        sort_keys=False,
        default_flow_style=False,
        width=1000,
    )
    return header + body


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (mode 0600).

    The text goes to a new file of our own in the same folder, which then
    replaces ``path``. Writing into an existing file would keep its owner, who
    could then read the hashes, and would follow a symlink to another file.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, FILE_MODE)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(temporary).unlink()
        raise
