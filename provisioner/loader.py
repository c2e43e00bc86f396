"""Read ``users.yaml`` into plain data, remembering where each value came from.

PyYAML's own constructors forget positions, silently keep the last of two
duplicate keys and expand aliases without bound. This module builds the data
itself, so duplicates are reported instead of lost, and a document that
expands past a fixed size is rejected before it can exhaust memory.

The fast path builds the data straight from libyaml's parser events and
records no positions. Anything unusual (a YAML error, a duplicate key, a
bad merge) sends the file to the detailed path, which composes the node
tree and records the file, line and column of every value for the error.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.errors import InvalidInput, Problem

# Keys whose values are secrets: messages about them never quote the value.
SECRET_KEYS = frozenset({"password", "password_hash"})
# Exceptions PyYAML's constructors raise on a bad value under an explicit
# tag such as !!float or !!timestamp. Only YAMLError is documented, but the
# others occur too.
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

# libyaml's parser composes the same node tree, with the same marks and
# errors, about ten times faster than the pure-Python one, which dominates
# a sync of a thousand users. Wheels of PyYAML include it; the fallback keeps
# a source build working.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Position:
    """1-based line and column of a value in the source file."""

    line: int
    column: int


@dataclass
class PositionTables:
    """Positions of every value and key, and how plain scalars were typed."""

    positions: dict[PathKey, Position] = field(default_factory=dict)
    key_positions: dict[PathKey, Position] = field(default_factory=dict)
    # For plain (unquoted) scalars that YAML typed as something other than a
    # string: the source text and what YAML turned it into.
    implicit: dict[PathKey, tuple[str, str]] = field(default_factory=dict)
    # Integers written in a form YAML 1.1 converts (010, 0x10, 1:30, 1_000).
    surprising: set[PathKey] = field(default_factory=set)


class SourceMap:
    """Source positions of a users file's values, recorded on first use.

    Positions are only read to report a problem, and recording them for a
    file of 10,000 users costs tens of megabytes. So a map made from
    ``text`` parses it a second time, with positions, when first asked.
    """

    def __init__(self, file: str, text: str | None = None) -> None:
        self.file = file
        self._text = text
        self._tables: PositionTables | None = None if text else PositionTables()

    @property
    def tables(self) -> PositionTables:
        """The position tables, recorded now if they were deferred."""
        if self._tables is None:
            self._tables = _record_positions(self._text or "", self.file)
        return self._tables

    @property
    def positions(self) -> dict[PathKey, Position]:
        """Position of each value, keyed by its path."""
        return self.tables.positions

    @property
    def key_positions(self) -> dict[PathKey, Position]:
        """Position of each mapping key, keyed by the path of its value."""
        return self.tables.key_positions

    @property
    def implicit(self) -> dict[PathKey, tuple[str, str]]:
        """Source text and resulting type of plain scalars typed as non-strings."""
        return self.tables.implicit

    @property
    def surprising(self) -> set[PathKey]:
        """Paths of integers written as 010, 0x10, 1:30 or 1_000.

        The fast loader hands such files to the detailed one, so deferred
        tables mean there are none, and they are not recorded just for this.
        """
        return self._tables.surprising if self._tables is not None else set()

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


def read_regular_file(path: Path, limit: int) -> bytes:
    """Return at most ``limit`` + 1 bytes of ``path``, which must be a regular file.

    A FIFO or a device would block the read or never end, and their size
    means nothing, so they are rejected before reading. Raises OSError, or
    ValueError for a file that is not regular.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ValueError("it is not a regular file (a directory, FIFO or device)")
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            return handle.read(limit + 1)
    finally:
        os.close(descriptor)


def load_file(path: Path) -> Document:
    """Read and parse ``path``; raise InvalidInput naming the file on failure."""
    name = str(path)
    try:
        raw = read_regular_file(path, MAX_FILE_BYTES)
    except ValueError as error:
        raise _invalid(name, f"cannot read the users file: {error}") from None
    except OSError as error:
        raise _invalid(
            name,
            f"cannot read the users file {str(path.absolute())!r}: {error.strerror}; "
            "name it with --file or PROVISIONER_USERS_FILE",
        ) from None
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
        data = _fast_load(text)
    except _NeedsDetail:
        return _detailed_load(text, name)
    return Document(data, SourceMap(name, text))


def _detailed_load(text: str, name: str) -> Document:
    # The slow path: compose the whole node tree and record every position,
    # so each problem can be reported with its file, line and column.
    source = SourceMap(name)
    try:
        # The pure-Python loader, because its error marks keep the source
        # line, which the tab hint below reads; speed does not matter here.
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


def _record_positions(text: str, name: str) -> PositionTables:
    try:
        return _detailed_load(text, name).source.tables
    except InvalidInput:
        # The fast path accepted this text, so the detailed one should too.
        return PositionTables()


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
        # libyaml marks a plain scalar with the style "", PyYAML with None.
        implicit = isinstance(node, yaml.ScalarNode) and not node.style
        if implicit and not isinstance(value, str):
            self.source.implicit[path] = (str(node.value), _describe_typed(value))
        if implicit and _surprising_integer(node.tag, str(node.value)):
            self.source.surprising.add(path)
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


class _NeedsDetail(Exception):
    """The fast loader met something that the detailed loader must report."""


def _fast_load(text: str) -> Any:
    """Build the data from parser events, without a node tree or positions.

    Raises _NeedsDetail on anything unusual (a YAML error, a duplicate or
    complex key, a bad merge, an unknown tag, too many values), so every
    problem is reported by the detailed loader with its position.
    """
    builder = _EventBuilder()
    try:
        for event in yaml.parse(text, Loader=_SafeLoader):
            builder.feed(event)
    except yaml.YAMLError:
        raise _NeedsDetail from None
    return builder.result()


class _EventBuilder:
    """Builds dicts, lists and scalars from a stream of parser events."""

    def __init__(self) -> None:
        self.constructor = yaml.SafeLoader("")
        self.resolver = yaml.SafeLoader("")
        # Each open collection: the value, its anchor, its node count and,
        # for mappings, the key waiting for its value (or None).
        self.stack: list[_Open] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.count = 0
        self.documents = 0
        self.root: Any = None

    def feed(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise _NeedsDetail
        elif isinstance(event, yaml.ScalarEvent):
            self._complete(self._scalar(event), event.anchor, 1)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchors:
                raise _NeedsDetail
            value, size = self.anchors[event.anchor]
            # An alias expands to its whole subtree again, as the detailed
            # loader counts it.
            self.count += size - 1
            self._complete(value, None, size)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            self._open(event)
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            done = self.stack.pop()
            if done.key is not None:
                raise _NeedsDetail
            self._complete(done.value, done.anchor, done.size)

    def result(self) -> Any:
        return {} if self.root is None else self.root

    def _open(self, event: yaml.CollectionStartEvent) -> None:
        if event.tag is not None and event.tag not in _COLLECTION_TAGS:
            raise _NeedsDetail
        if len(self.stack) >= MAX_DEPTH:
            raise _NeedsDetail
        mapping = isinstance(event, yaml.MappingStartEvent)
        self.stack.append(_Open({} if mapping else [], event.anchor))

    def _complete(self, value: Any, anchor: str | None, size: int) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            raise _NeedsDetail
        if anchor is not None:
            self.anchors[anchor] = (value, size)
        if not self.stack:
            self.root = value
            return
        parent = self.stack[-1]
        parent.size += size
        if isinstance(parent.value, list):
            parent.value.append(value)
        elif parent.key is None:
            parent.key = self._key(value)
        else:
            parent.add(value)

    def _key(self, value: Any) -> _Key:
        if isinstance(value, _MergeKey):
            return value
        if not isinstance(value, _KeyText):
            raise _NeedsDetail
        return value

    def _expecting_key(self) -> bool:
        top = self.stack[-1] if self.stack else None
        return top is not None and isinstance(top.value, dict) and top.key is None

    def _scalar(self, event: yaml.ScalarEvent) -> Any:
        plain = not event.style
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(  # type: ignore[no-untyped-call]
                yaml.ScalarNode, event.value, event.implicit
            )
        if self._expecting_key():
            if plain and tag == _MERGE_TAG:
                return _MergeKey(event.value)
            # Keys are taken as written, so "no:" stays the key "no".
            return _KeyText(event.value)
        if tag == _STR_TAG:
            return event.value
        construct = self.constructor.yaml_constructors.get(tag)
        if construct is None or tag in _COLLECTION_TAGS:
            raise _NeedsDetail
        if plain and _surprising_integer(tag, event.value):
            raise _NeedsDetail
        node = yaml.ScalarNode(tag, event.value, style=event.style)
        try:
            return construct(self.constructor, node)
        except _CONSTRUCT_ERRORS:
            raise _NeedsDetail from None


_INT_TAG = "tag:yaml.org,2002:int"
_DECIMAL = re.compile(r"[-+]?(0|[1-9][0-9]*)")


def _surprising_integer(tag: str | None, text: str) -> bool:
    # YAML 1.1 reads 010 as 8, 0x10 as 16, 1:30 as 90 and 1_000 as 1000;
    # a limit written that way is almost always a mistake.
    return tag == _INT_TAG and not _DECIMAL.fullmatch(text)


_STR_TAG = "tag:yaml.org,2002:str"
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


class _KeyText(str):
    """A mapping key, kept as written."""

    __slots__ = ()


class _MergeKey(str):
    """The merge key ``<<``."""

    __slots__ = ()


_Key = _KeyText | _MergeKey


class _Open:
    """A mapping or sequence whose end event has not come yet."""

    __slots__ = ("anchor", "explicit", "key", "size", "value")

    def __init__(self, value: Any, anchor: str | None) -> None:
        self.value = value
        self.anchor = anchor
        self.key: _Key | None = None
        self.size = 1
        self.explicit: set[str] = set()

    def add(self, value: Any) -> None:
        key = self.key
        self.key = None
        if isinstance(key, _MergeKey):
            self._merge(value)
            return
        assert key is not None
        if key in self.explicit:
            raise _NeedsDetail
        self.explicit.add(key)
        self.value[str(key)] = value

    def _merge(self, value: Any) -> None:
        # "<<: *defaults" copies keys that the mapping does not set itself,
        # before or after the merge key.
        sources = value if isinstance(value, list) else [value]
        for source in sources:
            if not isinstance(source, dict):
                raise _NeedsDetail
            for key, item in source.items():
                if key not in self.explicit and key not in self.value:
                    self.value[key] = item
