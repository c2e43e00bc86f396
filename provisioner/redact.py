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
_secrets: set[str] = set()


def register(secret: str) -> None:
    """Remember ``secret`` so that ``redact`` masks it from now on."""
    if secret in _PUBLIC:
        return
    if len(secret) < _MIN_LENGTH:
        # NOTE: very short secrets are not masked, because masking every
        # "abc" in ordinary text would garble messages; the code paths still
        # never format a password on purpose.
        return
    with _lock:
        _secrets.add(secret)


def register_basic_auth(username: str, password: str) -> None:
    """Register the login password and the header value built from it."""
    register(password)
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    register(token)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``***``."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


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
