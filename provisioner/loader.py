"""Read ``users.yaml`` into plain data, remembering where each value came from.

PyYAML's own constructors forget positions, silently keep the last of two
duplicate keys and expand aliases without bound. This module composes the
node tree and builds the data itself, so every later error can name the file,
line and column, duplicates are reported instead of lost, and a document
that expands past a fixed size is rejected before it can exhaust memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.errors import InvalidInput, Problem

# Keys whose values are secrets: messages about them never quote the value.
SECRET_KEYS = frozenset({"password", "password_hash"})
# What PyYAML's constructors raise on a bad value under an explicit tag such
# as !!float or !!timestamp; only YAMLError is documented, the rest happen.
_CONSTRUCT_ERRORS = (yaml.YAMLError, ValueError, TypeError, AttributeError)

# A users file of 10,000 users with MQTT grants is about 3 MB, so 16 MiB
# leaves room while bounding what a runaway generator can make us parse.
MAX_FILE_BYTES = 16 * 1024 * 1024
# Alias expansion can turn a few lines into billions of nodes; no real
# users file comes near this many values.
MAX_NODES = 1_000_000
# A users file nests about six levels deep; far deeper input is garbage, and
# PyYAML composes nodes recursively, so it would exhaust the Python stack.
MAX_DEPTH = 64

# Byte order marks of the encodings that are not UTF-8, which YAML text
# saved by some Windows editors starts with.
_FOREIGN_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}

PathKey = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Position:
    """1-based line and column of a value in the source file."""

    line: int
    column: int


@dataclass
class SourceMap:
    """Positions of every value and key, and how plain scalars were typed."""

    file: str
    positions: dict[PathKey, Position] = field(default_factory=dict)
    key_positions: dict[PathKey, Position] = field(default_factory=dict)
    # For plain (unquoted) scalars that YAML typed as something other than a
    # string: the source text and what YAML turned it into.
    implicit: dict[PathKey, tuple[str, str]] = field(default_factory=dict)

    def where(self, path: PathKey, *, key: bool = False) -> str:
        """Describe ``path`` as ``file:line:column: dotted.path``."""
        position = self.locate(path, key=key)
        dotted = format_path(path)
        if position is None:
            return f"{self.file}: {dotted}" if dotted else self.file
        prefix = f"{self.file}:{position.line}:{position.column}"
        return f"{prefix}: {dotted}" if dotted else prefix

    def locate(self, path: PathKey, *, key: bool = False) -> Position | None:
        """Return the position of ``path`` or of its nearest known parent."""
        table = self.key_positions if key else self.positions
        probe = path
        while True:
            if probe in table:
                return table[probe]
            if probe in self.positions:
                return self.positions[probe]
            if not probe:
                return None
            probe = probe[:-1]


@dataclass(frozen=True)
class Document:
    """Parsed users file: the data and where each part of it came from."""

    data: Any
    source: SourceMap


def format_path(path: PathKey) -> str:
    """Render ``("users", 0, "name")`` as ``users[0].name``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def load_file(path: Path) -> Document:
    """Read and parse ``path``; raise InvalidInput naming the file on failure."""
    name = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _invalid(
                name, f"the file is {size} bytes, over the limit of {MAX_FILE_BYTES}"
            )
        raw = path.read_bytes()
    except OSError as error:
        raise _invalid(name, f"cannot read the users file: {error.strerror}") from None
    return load_bytes(raw, name)


def load_bytes(raw: bytes, name: str) -> Document:
    """Parse ``raw`` as the users file called ``name``."""
    if len(raw) > MAX_FILE_BYTES:
        raise _invalid(
            name, f"the file is {len(raw)} bytes, over the limit of {MAX_FILE_BYTES}"
        )
    for bom, encoding in _FOREIGN_BOMS.items():
        if raw.startswith(bom):
            raise _invalid(name, f"the file is {encoding} text; save it as UTF-8 text")
    if b"\x00" in raw:
        raise _invalid(name, "the file contains NUL bytes; it is binary, not YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise _invalid(
            f"{name}:{line}", "the file is not valid UTF-8; save it as UTF-8 text"
        ) from None
    return load_text(text, name)


def load_text(text: str, name: str) -> Document:
    """Parse YAML ``text``; an empty or whitespace-only document is an empty mapping."""
    source = SourceMap(name)
    if not text.strip():
        # YAML rejects a tab on a line of its own, but a file of nothing but
        # blanks declares nothing either way.
        return Document({}, source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        raise _invalid(_mark_place(name, error), _yaml_message(error)) from None
    except yaml.YAMLError as error:
        raise _invalid(name, f"invalid YAML: {error}") from None
    except RecursionError:
        raise _invalid(name, _too_deep()) from None
    if node is None:
        return Document({}, source)
    builder = _Builder(source)
    return Document(builder.build(node, ()), source)


def _mark_place(name: str, error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    if mark is None:
        return name
    return f"{name}:{mark.line + 1}:{mark.column + 1}"


def _yaml_message(error: yaml.MarkedYAMLError) -> str:
    parts = [part for part in (error.context, error.problem) if part]
    message = "invalid YAML: " + ", ".join(parts) if parts else "invalid YAML"
    mark = error.problem_mark
    buffer = getattr(mark, "buffer", None)
    if mark is not None and buffer and buffer[mark.pointer : mark.pointer + 1] == "\t":
        message += "; YAML does not allow tabs for indentation, so indent with spaces"
    return message


def _too_deep() -> str:
    return f"the document is nested more than {MAX_DEPTH} levels deep; it is not a users file"


def _invalid(where: str, message: str) -> InvalidInput:
    return InvalidInput([Problem(where, message)])


class _Builder:
    """Turns a composed node tree into dicts, lists and scalars."""

    def __init__(self, source: SourceMap) -> None:
        self.source = source
        self.constructor = yaml.SafeLoader("")
        self.count = 0
        self.problems: list[Problem] = []

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        value = self._build(node, path)
        if self.problems:
            raise InvalidInput(self.problems)
        return value

    def _build(self, node: yaml.Node, path: PathKey) -> Any:
        if len(path) > MAX_DEPTH:
            raise _invalid(f"{self.source.file}:{_place(node)}", _too_deep())
        self.count += 1
        if self.count > MAX_NODES:
            raise _invalid(
                self.source.file,
                f"the document expands to more than {MAX_NODES} values; "
                "remove the aliases that multiply it",
            )
        self.source.positions[path] = _position(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [
                self._build(item, (*path, index))
                for index, item in enumerate(node.value)
            ]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: PathKey) -> Any:
        try:
            value = self.constructor.construct_object(node)
        except _CONSTRUCT_ERRORS as error:
            message = _construct_message(error, node, path)
            self.problems.append(Problem(self.source.where(path), message))
            return None
        implicit = isinstance(node, yaml.ScalarNode) and node.style is None
        if implicit and not isinstance(value, str):
            self.source.implicit[path] = (str(node.value), _describe_typed(value))
        return value

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[str, Any]:
        result: dict[str, Any] = {}
        explicit: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self._merge(result, explicit, value_node, path)
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            child = (*path, key)
            if key in explicit:
                self.problems.append(
                    Problem(
                        f"{self.source.file}:{_place(key_node)}: {format_path(child)}",
                        f"duplicate key {key!r}; YAML would keep only the last one, "
                        "so merge the two entries",
                    )
                )
                continue
            explicit.add(key)
            self.source.key_positions[child] = _position(key_node)
            result[key] = self._build(value_node, child)
        return result

    def _key(self, key_node: yaml.Node, path: PathKey) -> str | None:
        # Keys are taken as written, so "no:" stays the key "no".
        if isinstance(key_node, yaml.ScalarNode):
            return str(key_node.value)
        self.problems.append(
            Problem(
                f"{self.source.file}:{_place(key_node)}: {format_path(path)}",
                "a mapping key must be a plain name, not a list or mapping",
            )
        )
        return None

    def _merge(
        self, result: dict[str, Any], explicit: set[str], node: yaml.Node, path: PathKey
    ) -> None:
        # "<<: *defaults" copies keys that the mapping does not set itself.
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self.problems.append(
                    Problem(
                        self.source.where(path),
                        "a merge key (<<) needs a mapping alias",
                    )
                )
                continue
            merged = self._mapping(source, path)
            for key, value in merged.items():
                if key not in explicit and key not in result:
                    result[key] = value


def _construct_message(error: Exception, node: yaml.Node, path: PathKey) -> str:
    # str(error) of a MarkedYAMLError quotes the source line, and other
    # errors quote the value, so neither is used as it is.
    if path and path[-1] in SECRET_KEYS:
        # The tag is hidden too: written as !!name:VALUE it carries the value.
        return "invalid value under an explicit YAML tag (value hidden); remove the tag"
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        return f"invalid value: {error.problem}"
    return f"invalid value {node.value!r} for the tag {node.tag}"


def _describe_typed(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if value is None:
        return "null"
    return f"the {type(value).__name__} {value}"


def _place(node: yaml.Node) -> str:
    position = _position(node)
    return f"{position.line}:{position.column}"


def _position(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)
