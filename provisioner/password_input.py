"""Read a new password from the terminal or from standard input.

``hash-password`` never takes the password as an argument, because argv is
visible to every user of the machine (``ps``, ``/proc/PID/cmdline``) and
lands in shell history. On a terminal the password is typed twice without
echo. Otherwise the first line of standard input is used, so scripts can
pipe a secret in.
"""

from __future__ import annotations

import getpass
from typing import TextIO


class PasswordInputError(ValueError):
    """The password could not be read, was empty, or the two entries differed."""


def read_new_password(stream: TextIO) -> str:
    """Return the password from ``stream``: prompted twice on a TTY, else its first line."""
    password = _prompt_twice() if stream.isatty() else _first_line(stream)
    if not password:
        raise PasswordInputError(
            "the password is empty; a user needs a non-empty password"
        )
    return password


def _prompt_twice() -> str:
    first = getpass.getpass("Password: ")
    if not first:
        return first
    second = getpass.getpass("Repeat the password: ")
    if first != second:
        raise PasswordInputError("the two passwords differ; nothing was hashed")
    return first


def _first_line(stream: TextIO) -> str:
    line = stream.readline()
    return line.removesuffix("\n").removesuffix("\r")
