"""Expand ``${VAR}`` references in the users file from the environment.

Platform secrets (``fly secrets set``, Docker and Kubernetes env) reach the
sidecar as environment variables, so passwords are written as ``${VAR}``.
``${VAR:-default}`` gives a fallback for ordinary values, but never for a
password, because a fallback password would silently weaken an account when
the secret is missing. ``$${`` writes a literal ``${``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from provisioner.loader import SECRET_KEYS, PathKey

_REFERENCE = re.compile(r"\$(\$)?\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
__all__ = ["SECRET_KEYS", "Unresolved", "interpolate"]


@dataclass(frozen=True)
class Unresolved:
    """A reference that could not be expanded, with what to do about it."""

    path: PathKey
    message: str


def interpolate(
    data: Any, environ: Mapping[str, str], path: PathKey = ()
) -> tuple[Any, list[Unresolved]]:
    """Return ``data`` with references expanded, and every failure found."""
    failures: list[Unresolved] = []
    result = _walk(data, environ, path, failures)
    return result, failures


def _walk(
    data: Any, environ: Mapping[str, str], path: PathKey, out: list[Unresolved]
) -> Any:
    # A container without references is returned as it is, not copied, so
    # a large file without ${...} is not held in memory twice.
    if isinstance(data, dict):
        expanded = {
            key: _walk(value, environ, (*path, key), out) for key, value in data.items()
        }
        return data if _same_items(expanded.values(), data.values()) else expanded
    if isinstance(data, list):
        items = [
            _walk(item, environ, (*path, index), out) for index, item in enumerate(data)
        ]
        return data if _same_items(items, data) else items
    if isinstance(data, str) and "${" in data:
        return _expand(data, environ, path, out)
    return data


def _same_items(new: Iterable[Any], old: Iterable[Any]) -> bool:
    return all(a is b for a, b in zip(new, old, strict=True))


def _expand(
    text: str, environ: Mapping[str, str], path: PathKey, out: list[Unresolved]
) -> str:
    secret = bool(path) and path[-1] in SECRET_KEYS

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "${" + match.group(2) + "}"
        return _resolve(match.group(2), environ, path, secret, out)

    expanded = _REFERENCE.sub(replace, text)
    if "${" in _REFERENCE.sub("", text):
        out.append(
            Unresolved(
                path, "unclosed ${ reference; write ${NAME}, or $${ for a literal ${"
            )
        )
    return expanded


def _resolve(
    body: str,
    environ: Mapping[str, str],
    path: PathKey,
    secret: bool,
    out: list[Unresolved],
) -> str:
    name, has_default, default = body.partition(":-")
    if not _NAME.fullmatch(name):
        # In a password the text between the braces may be part of a
        # generated secret that happens to contain "${", so it is not shown.
        shown = "(hidden)" if secret else repr(name)
        out.append(
            Unresolved(
                path,
                f"invalid variable name {shown} in ${{...}}; use letters, digits "
                "and _, or write $${ for a literal ${",
            )
        )
        return ""
    if has_default and secret:
        out.append(
            Unresolved(
                path,
                f"${{{name}:-...}} gives a password a fallback value; "
                f"write ${{{name}}} and set {name} in the environment",
            )
        )
        return ""
    if name in environ:
        return environ[name]
    if has_default:
        return default
    out.append(
        Unresolved(
            path,
            f"environment variable {name} is not set; set it or remove the reference",
        )
    )
    return ""
