"""Keep secrets out of every log line and message the provisioner writes.

Each secret the process learns (the login password, declared passwords,
their hashes and the Basic authorization value) is registered here. A
logging filter replaces any registered value in formatted records, so a
secret that reaches a message by mistake is still never written.
"""

from __future__ import annotations

import base64
import logging
import threading

MASK = "***"
_MIN_LENGTH = 4
# The broker's default password is public knowledge; masking it would turn
# the user name guest into *** in every message about that user.
_PUBLIC = frozenset({"guest"})

_lock = threading.Lock()
# Secrets keyed by their first _MIN_LENGTH characters, longest first, so
# redact() scans a line once instead of searching it for every secret: a
# sync of 5,000 users registers 5,000 passwords and logs 15,000 lines.
_by_prefix: dict[str, list[str]] = {}


def register(secret: str) -> None:
    """Remember ``secret`` so that ``redact`` masks it from now on."""
    if secret in _PUBLIC:
        return
    if len(secret) < _MIN_LENGTH:
        # NOTE: secrets shorter than 4 characters are not masked, because
        # masking every "abc" in ordinary text would garble messages. The
        # code never formats a password on purpose either way.
        return
    with _lock:
        candidates = _by_prefix.setdefault(secret[:_MIN_LENGTH], [])
        if secret not in candidates:
            candidates.append(secret)
            candidates.sort(key=len, reverse=True)


def register_basic_auth(username: str, password: str) -> None:
    """Register the login password and the header value built from it."""
    register(password)
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    register(token)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``***``."""
    with _lock:
        width = _MIN_LENGTH
        hits = [
            i for i in range(len(text) - width + 1) if text[i : i + width] in _by_prefix
        ]
        if not hits:
            return text
        pieces: list[str] = []
        start = 0
        for index in hits:
            found = _secret_at(text, index) if index >= start else ""
            if found:
                pieces += (text[start:index], MASK)
                start = index + len(found)
    pieces.append(text[start:])
    return "".join(pieces)


def _secret_at(text: str, index: int) -> str:
    # The longest registered secret starting at text[index], or "".
    for secret in _by_prefix.get(text[index : index + _MIN_LENGTH], ()):
        if text.startswith(secret, index):
            return secret
    return ""


class RedactingFilter(logging.Filter):
    """Logging filter that masks registered secrets in each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(
                logging.Formatter().formatException(record.exc_info)
            )
            record.exc_info = None
        record.msg = cleaned
        record.args = None
        return True
