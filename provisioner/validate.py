"""Turn ``users.yaml`` into a checked ``UsersFile`` or one error listing every problem.

Validation runs before any request that changes the broker. Each top-level
entry is validated on its own so that one broken user does not hide the
problems of the others, and the whole-file checks (duplicates, references,
regexes, password sources) then run over every entry that parsed.
"""

from __future__ import annotations

import difflib
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from provisioner import spec
from provisioner.errors import InvalidInput, Problem
from provisioner.interpolate import SECRET_KEYS, interpolate
from provisioner.loader import (
    Document,
    PathKey,
    SourceMap,
    load_file,
    read_regular_file,
)
from provisioner.mqtt_checks import check_mqtt_blocks, warn_slash_topics
from provisioner.passwords import HashingAlgorithm, hash_form_error

log = logging.getLogger(__name__)

ROOT_VHOST = "/"
# A password file contains one password; anything larger is a wrong path.
MAX_PASSWORD_FILE_BYTES = 4096
EXTENSION_PREFIX = "x-"
_SECTIONS: dict[str, type[BaseModel]] = {
    "vhosts": spec.Vhost,
    "users": spec.User,
}


def load_users_file(path: Path, environ: Mapping[str, str]) -> spec.UsersFile:
    """Load, expand and check ``path``; raise InvalidInput listing every problem."""
    return validate_document(load_file(path), environ, base_dir=path.parent)


def validate_document(
    document: Document, environ: Mapping[str, str], base_dir: Path
) -> spec.UsersFile:
    """Check a parsed document; see ``load_users_file``."""
    source = document.source
    problems: list[Problem] = []
    data = document.data
    if not isinstance(data, dict):
        raise InvalidInput([Problem(source.where(()), _top_level_message(data))])

    data, unresolved = interpolate(data, environ)
    problems += [
        Problem(source.where(item.path), _owner_prefix(data, item.path) + item.message)
        for item in unresolved
    ]
    failed_paths = {item.path for item in unresolved}

    checker = _Checker(source, base_dir)
    parsed = checker.parse_sections(data)
    problems += checker.problems
    problems += _cross_check(parsed, checker.origins, source, base_dir)
    problems += checker.check_broken_users(set(names(parsed.vhosts)) | {ROOT_VHOST})
    problems += _check_prune(parsed, source)
    problems += _surprising_integers(source, problems)
    # A missing variable already explains an empty password, so it is reported once.
    problems = [p for p in problems if not _explained_by(p, failed_paths, source)]
    if problems:
        raise InvalidInput(sorted(problems, key=_line_and_column))
    return parsed


def _surprising_integers(source: SourceMap, found: list[Problem]) -> list[Problem]:
    reported = {problem.where for problem in found}
    extra = []
    for path in sorted(source.surprising, key=str):
        where = source.where(path)
        # A string field already has a type error, and a secret is not echoed.
        if where in reported or path[-1] in SECRET_KEYS:
            continue
        text, typed = source.implicit[path]
        extra.append(
            Problem(
                where, f"YAML reads {text} as {typed}; write it in plain decimal digits"
            )
        )
    return extra


_PLACE = re.compile(r":(\d+):(\d+)(?::|$)")


def _line_and_column(problem: Problem) -> tuple[int, int]:
    # Problems are listed in file order; file-wide ones come first.
    match = _PLACE.search(problem.where)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _owner_prefix(data: dict[str, Any], path: PathKey) -> str:
    # A file path like users[3].password does not say whose password it is.
    if len(path) < 2 or path[0] != "users" or not isinstance(path[1], int):
        return ""
    users = data.get("users")
    if not isinstance(users, list) or path[1] >= len(users):
        return ""
    entry = users[path[1]]
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"user {name!r}: " if isinstance(name, str) else ""


def _explained_by(problem: Problem, failed: set[PathKey], source: SourceMap) -> bool:
    return problem.message.startswith("password is empty") and any(
        problem.where == source.where(path) for path in failed
    )


def _top_level_message(data: Any) -> str:
    kind = type(data).__name__
    return f"the file must be a mapping with the keys vhosts, users and prune, but it is a {kind}"


class _Checker:
    """Validates each top-level entry with its model and collects problems."""

    def __init__(self, source: SourceMap, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        # Position in the file of each parsed entry, since entries that fail
        # to parse are dropped and later ones shift down.
        self.origins: dict[str, list[int]] = {"vhosts": [], "users": []}
        # Users that failed their model, kept so their grants still get the
        # whole-file checks and one run reports every problem.
        self.broken_users: list[tuple[int, dict[str, Any]]] = []

    def parse_sections(self, data: dict[str, Any]) -> spec.UsersFile:
        for key in data:
            # "x-" keys hold YAML anchors for reuse, as in compose files.
            if key not in spec.UsersFile.model_fields and not key.startswith(
                EXTENSION_PREFIX
            ):
                self._unknown_key((key,), list(spec.UsersFile.model_fields))
        vhosts = self._parse_list(data, "vhosts", spec.Vhost)
        users = self._parse_list(data, "users", spec.User)
        prune = (
            self._parse_one(data.get("prune", {}), ("prune",), spec.Prune)
            or spec.Prune()
        )
        return spec.UsersFile.model_construct(vhosts=vhosts, users=users, prune=prune)

    def _parse_list(
        self, data: dict[str, Any], key: str, model: type[Any]
    ) -> list[Any]:
        raw = data.get(key)
        if raw is None:
            return []
        if not isinstance(raw, list):
            self._add((key,), f"must be a list of {key} (entries starting with '- ')")
            return []
        parsed = []
        for index, item in enumerate(raw):
            entry = self._parse_one(item, (key, index), model)
            if entry is not None:
                parsed.append(entry)
                self.origins[key].append(index)
            elif model is spec.User and isinstance(item, dict):
                self.broken_users.append((index, item))
        return parsed

    def check_broken_users(self, vhosts: set[str]) -> list[Problem]:
        """Check the grants of users that failed validation, each grant on its own."""
        problems: list[Problem] = []
        for index, raw in self.broken_users:
            at: PathKey = ("users", index)
            for field, model in _GRANT_MODELS.items():
                entries = raw.get(field)
                if not isinstance(entries, list):
                    continue
                for position, entry in enumerate(entries):
                    grant = _quiet_parse(model, entry)
                    if grant is None:
                        # Its own errors are already in the user's report.
                        continue
                    path = (*at, field, position)
                    problems += _check_reference(
                        grant.vhost, vhosts, (*path, "vhost"), self.source
                    )
                    for regex_field in ("configure", "write", "read"):
                        if hasattr(grant, regex_field):
                            problems += _check_regex(
                                getattr(grant, regex_field),
                                (*path, regex_field),
                                self.source,
                            )
        return problems

    def _parse_one(self, raw: Any, path: PathKey, model: type[Any]) -> Any:
        try:
            return model.model_validate(raw)
        except ValidationError as error:
            for detail in error.errors():
                self._report(path, model, detail)
            return None

    def _report(self, base: PathKey, model: type[BaseModel], detail: Any) -> None:
        path: PathKey = (*base, *detail["loc"])
        kind = detail["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, tuple(detail["loc"][:-1]))
            self._unknown_key(path, allowed)
        elif kind == "missing":
            self._add(path, f"{path[-1]} is required")
        elif kind.endswith("_type") or kind == "model_attributes_type":
            self._add(path, self._type_message(path, kind, detail))
        else:
            self._add(path, _value_message(path, detail))

    def _type_message(self, path: PathKey, kind: str, detail: Any) -> str:
        expected = _EXPECTED.get(kind, kind.removesuffix("_type"))
        implicit = self.source.implicit.get(path)
        secret = path[-1] in SECRET_KEYS
        if implicit is not None and kind == "string_type":
            text, typed = implicit
            if secret:
                return (
                    "expected a string, but YAML reads the value as another type "
                    f'(value hidden); quote it: {path[-1]}: "..."'
                )
            return (
                f"expected a string, but YAML reads {text} as {typed}; "
                f'quote it: {path[-1]}: "{text}"'
            )
        value = detail.get("input")
        got = _describe(value, secret)
        if (
            kind == "int_type"
            and isinstance(value, str)
            and value.lstrip("-").isdigit()
        ):
            return f"expected {expected}, got the string {value!r}; remove the quotes"
        return f"expected {expected}, got {got}"

    def _unknown_key(self, path: PathKey, allowed: list[str]) -> None:
        key = str(path[-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        where = self.source.where(path, key=True)
        choices = ", ".join(allowed)
        self.problems.append(
            Problem(where, f"unknown key {key!r}; {hint}allowed: {choices}")
        )

    def _add(self, path: PathKey, message: str) -> None:
        self.problems.append(Problem(self.source.where(path), message))


_GRANT_MODELS: dict[str, type[spec.Permission] | type[spec.TopicPermission]] = {
    "permissions": spec.Permission,
    "topic_permissions": spec.TopicPermission,
}


def _quiet_parse(
    model: type[spec.Permission] | type[spec.TopicPermission], raw: Any
) -> spec.Permission | spec.TopicPermission | None:
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


_EXPECTED = {
    "string_type": "a string",
    "int_type": "a whole number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _describe(value: Any, secret: bool) -> str:
    if secret:
        return f"a {type(value).__name__} (value hidden)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _value_message(path: PathKey, detail: Any) -> str:
    if detail["type"] == "greater_than_equal":
        return f"{path[-1]} must be -1 (no limit), 0 (block) or a positive whole number"
    if detail["type"] == "string_too_short":
        return f"{path[-1]} must not be empty"
    return f"invalid value: {detail['msg']}"


def _allowed_keys(model: type[BaseModel], path: PathKey) -> list[str]:
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        field = _field_by_name(current, part)
        if field is None:
            return []
        current = _model_in(field.annotation)
        if current is None:
            return []
    return [field.alias or name for name, field in current.model_fields.items()]


def _field_by_name(model: type[BaseModel], key: str) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


# Whole-file checks -----------------------------------------------------------


def _cross_check(
    parsed: spec.UsersFile,
    origins: dict[str, list[int]],
    source: SourceMap,
    base_dir: Path,
) -> list[Problem]:
    problems: list[Problem] = []
    problems += _duplicates(names(parsed.vhosts), "vhosts", origins["vhosts"], source)
    problems += _duplicates(names(parsed.users), "users", origins["users"], source)
    named: tuple[tuple[str, list[str]], ...] = (
        ("vhosts", names(parsed.vhosts)),
        ("users", names(parsed.users)),
    )
    for section, entry_names in named:
        for name, index in zip(entry_names, origins[section], strict=True):
            problems += _check_name(name, (section, index, "name"), source)
    declared_vhosts = {vhost.name for vhost in parsed.vhosts} | {ROOT_VHOST}
    for user, index in zip(parsed.users, origins["users"], strict=True):
        at: PathKey = ("users", index)
        problems += _check_user(user, at, declared_vhosts, source, base_dir)
    problems += check_mqtt_blocks(parsed.users, origins["users"], source)
    warn_slash_topics(parsed.users, origins["users"], source)
    return problems


def _check_prune(parsed: spec.UsersFile, source: SourceMap) -> list[Problem]:
    prune = parsed.prune
    if not (prune.users or prune.vhosts) or parsed.users or prune.allow_empty:
        return []
    return [
        Problem(
            source.where(("prune",)),
            "pruning is on but the file declares no users, so a sync would delete "
            "every account it may delete; declare the users, or set "
            "prune.allow_empty: true if that is really meant",
        )
    ]


def _check_name(name: str, path: PathKey, source: SourceMap) -> list[Problem]:
    # Control and invisible formatting characters (NUL, newlines, U+202E)
    # make a name that logs and the management UI show as something else.
    hidden = [c for c in name if unicodedata.category(c) in ("Cc", "Cf")]
    if hidden:
        codes = ", ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(hidden))
        return [
            Problem(
                source.where(path),
                f"name {name!r} contains control or invisible characters ({codes}); remove them",
            )
        ]
    if name != name.strip():
        log.warning(
            "%s: name %r starts or ends with spaces, which is easy to miss when "
            "typing it into a client",
            source.where(path),
            name,
        )
    return []


def _duplicates(
    entries: list[str], section: str, origins: list[int], source: SourceMap
) -> list[Problem]:
    counts = Counter(entries)
    return [
        Problem(
            source.where((section, index, "name")),
            f"duplicate name {name!r}; each of {section} must be declared once",
        )
        for name, index in zip(entries, origins, strict=True)
        if counts[name] > 1
    ]


def _check_user(
    user: spec.User, at: PathKey, vhosts: set[str], source: SourceMap, base_dir: Path
) -> list[Problem]:
    problems = _check_password_source(user, at, source, base_dir)
    seen_vhosts: set[str] = set()
    for index, permission in enumerate(user.permissions):
        path = (*at, "permissions", index)
        problems += _check_reference(permission.vhost, vhosts, (*path, "vhost"), source)
        if permission.vhost in seen_vhosts:
            problems.append(
                Problem(
                    source.where((*path, "vhost")),
                    f"a second permission for vhost {permission.vhost!r}; the broker keeps "
                    "one per user and vhost, so merge them into one regex each",
                )
            )
        seen_vhosts.add(permission.vhost)
        for field in ("configure", "write", "read"):
            problems += _check_regex(getattr(permission, field), (*path, field), source)
    problems += _check_topic_permissions(user, at, vhosts, source)
    if user.mqtt is not None:
        problems += _check_reference(
            user.mqtt.vhost, vhosts, (*at, "mqtt", "vhost"), source
        )
    problems += _check_tags(user, at, source)
    return problems


def _check_topic_permissions(
    user: spec.User, at: PathKey, vhosts: set[str], source: SourceMap
) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for index, grant in enumerate(user.topic_permissions):
        path = (*at, "topic_permissions", index)
        problems += _check_reference(grant.vhost, vhosts, (*path, "vhost"), source)
        key = (grant.vhost, grant.exchange)
        if key in seen:
            problems.append(
                Problem(
                    source.where(path),
                    f"a second topic permission for vhost {grant.vhost!r} and exchange "
                    f"{grant.exchange!r}; merge them into one",
                )
            )
        seen.add(key)
        for field in ("write", "read"):
            problems += _check_regex(getattr(grant, field), (*path, field), source)
    return problems


def _check_tags(user: spec.User, at: PathKey, source: SourceMap) -> list[Problem]:
    problems = []
    for index, tag in enumerate(user.tags):
        if not tag.strip() or "," in tag:
            problems.append(
                Problem(
                    source.where((*at, "tags", index)),
                    f"invalid tag {tag!r}; a tag is a non-empty word without commas",
                )
            )
    return problems


def _check_reference(
    vhost: str, declared: set[str], path: PathKey, source: SourceMap
) -> list[Problem]:
    if vhost in declared:
        return []
    choices = sorted(declared)
    close = difflib.get_close_matches(vhost, choices, n=1)
    hint = f"did you mean {close[0]!r}, or " if close else ""
    return [
        Problem(
            source.where(path),
            f"vhost {vhost!r} is not declared; {hint}add '- name: {vhost}' under vhosts",
        )
    ]


def _check_regex(pattern: str, path: PathKey, source: SourceMap) -> list[Problem]:
    # NOTE: the broker compiles with Erlang's re (PCRE); Python's re accepts
    # nearly the same syntax, but a PCRE-only construct such as (?<name>...)
    # written without the P is reported here although the broker would take it.
    try:
        re.compile(pattern)
    except re.error as error:
        return [
            Problem(
                source.where(path),
                f"regex {pattern!r} does not compile: {error.msg} at position {error.pos}",
            )
        ]
    reason = python_only_syntax(pattern)
    if reason is not None:
        return [Problem(source.where(path), f"regex {pattern!r} {reason}")]
    return []


_PYTHON_ONLY_FLAGS = re.compile(r"\(\?[aiLmsux]*[aLu][aiLmsux]*[:)-]")
_EMPTY_MIN_QUANTIFIER = re.compile(r"(?<!\\)\{,\d+\}")


def python_only_syntax(pattern: str) -> str | None:
    """Return why ``pattern`` means something else to PCRE than to Python, or None.

    The broker rejects these with HTTP 400 after earlier objects of the same
    run were applied, so they are caught before any request.
    """
    index = 0
    while index < len(pattern) - 1:
        if pattern[index] == "\\":
            escape = pattern[index + 1]
            if escape in "NuU":
                return (
                    f"uses \\{escape}, which only Python's re knows; write the "
                    "character itself or \\x{hex code}"
                )
            index += 2
            continue
        index += 1
    if _PYTHON_ONLY_FLAGS.search(pattern):
        return "uses the inline flag a, L or u, which PCRE does not have; remove it"
    if _EMPTY_MIN_QUANTIFIER.search(pattern):
        return "uses {,n}, which PCRE reads as literal text; write {0,n}"
    return None


def _check_password_source(
    user: spec.User, at: PathKey, source: SourceMap, base_dir: Path
) -> list[Problem]:
    given = [
        key
        for key in ("password", "password_file", "password_hash")
        if getattr(user, key) is not None
    ]
    if len(given) != 1:
        listed = " and ".join(given) if given else "none"
        return [
            Problem(
                source.where(at),
                f"user {user.name!r} needs exactly one of password, password_file and "
                f"password_hash, but has {listed}",
            )
        ]
    if user.hashing_algorithm not in spec.HASH_ALGORITHMS:
        return [
            Problem(
                source.where((*at, "hashing_algorithm")),
                f"user {user.name!r} has unknown hashing_algorithm "
                f"{user.hashing_algorithm!r}; use sha256 (default), sha512 or md5",
            )
        ]
    if given[0] == "password":
        return _check_password_value(user.password, (*at, "password"), source)
    if given[0] == "password_hash":
        return _check_hash(user, (*at, "password_hash"), source)
    return _check_password_file(user, (*at, "password_file"), source, base_dir)


def _check_password_value(
    secret: SecretStr | None, path: PathKey, source: SourceMap
) -> list[Problem]:
    if secret is not None and secret.get_secret_value() == "":
        return [
            Problem(source.where(path), "password is empty; set a non-empty password")
        ]
    return []


def _check_hash(user: spec.User, path: PathKey, source: SourceMap) -> list[Problem]:
    assert user.password_hash is not None
    algorithm = HashingAlgorithm.from_short_name(user.hashing_algorithm)
    reason = hash_form_error(user.password_hash.get_secret_value(), algorithm)
    if reason is None:
        return []
    return [
        Problem(
            source.where(path),
            f"password_hash of user {user.name!r} is invalid: {reason}",
        )
    ]


def _check_password_file(
    user: spec.User, path: PathKey, source: SourceMap, base_dir: Path
) -> list[Problem]:
    assert user.password_file is not None
    try:
        read_password_file(user.password_file, base_dir)
    except ValueError as error:
        return [Problem(source.where(path), f"user {user.name!r}: {error}")]
    return []


def read_password_file(name: str, base_dir: Path) -> str:
    """Return the password stored in ``name``, without one trailing newline.

    A relative path is taken from the users file's folder. Raises ValueError
    naming the path (never the content) when it cannot be used.
    """
    path = (base_dir / name) if not Path(name).is_absolute() else Path(name)
    try:
        raw = read_regular_file(path, MAX_PASSWORD_FILE_BYTES)
    except OSError as error:
        raise ValueError(
            f"password_file {str(path)!r} cannot be read: {error.strerror}"
        ) from None
    except ValueError as error:
        raise ValueError(f"password_file {str(path)!r}: {error}") from None
    if len(raw) > MAX_PASSWORD_FILE_BYTES:
        raise ValueError(
            f"password_file {str(path)!r} is over {MAX_PASSWORD_FILE_BYTES} bytes; "
            "it should contain only the password"
        )
    try:
        # Bytes, not text mode, so a "\r" inside the password stays as written.
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"password_file {str(path)!r} is not UTF-8 text") from None
    text = text.removeprefix("\ufeff").removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError(f"password_file {str(path)!r} is empty")
    return text


def names(entries: Iterable[spec.User | spec.Vhost]) -> list[str]:
    """Return the names of ``entries`` in file order."""
    return [entry.name for entry in entries]
