"""RabbitMQ password hashes: make them, check their form, compare them.

The internal auth backend stores ``base64(salt + H(salt + utf8(password)))``
with a 4-byte random salt, where H is SHA-256, SHA-512 or MD5 depending on
the hashing module (``rabbit_password_hashing_sha256`` and friends in
rabbitmq-server's ``rabbit_password.erl``). Hashing the declared password
with the stored salt shows whether the password changed without writing it,
and hashing locally keeps plain passwords out of every request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from enum import StrEnum

SALT_LENGTH = 4


class HashingAlgorithm(StrEnum):
    """Hashing modules of the internal auth backend, named as the broker names them."""

    SHA256 = "rabbit_password_hashing_sha256"
    SHA512 = "rabbit_password_hashing_sha512"
    MD5 = "rabbit_password_hashing_md5"

    @property
    def short_name(self) -> str:
        """Name used in ``users.yaml``: sha256, sha512 or md5."""
        return self.value.rsplit("_", 1)[1]

    @property
    def digest_size(self) -> int:
        """Length in bytes of the digest that follows the salt."""
        return hashlib.new(self.short_name).digest_size

    @classmethod
    def from_broker(cls, value: str | None) -> HashingAlgorithm:
        """Map the broker's ``hashing_algorithm`` field; a missing one means MD5."""
        if not value:
            return cls.MD5
        return cls(value)

    @classmethod
    def from_short_name(cls, name: str) -> HashingAlgorithm:
        """Map ``sha256``/``sha512``/``md5`` to the algorithm."""
        for member in cls:
            if member.short_name == name:
                return member
        raise ValueError(name)


def _digest(algorithm: HashingAlgorithm, salt: bytes, password: str) -> bytes:
    # MD5 and SHA are what the broker uses here; they are not our choice.
    hasher = hashlib.new(algorithm.short_name, usedforsecurity=False)
    hasher.update(salt + password.encode("utf-8"))
    return hasher.digest()


def hash_password(
    password: str,
    algorithm: HashingAlgorithm = HashingAlgorithm.SHA256,
    salt: bytes | None = None,
) -> str:
    """Return the broker's stored form of ``password`` with a fresh salt."""
    if salt is None:
        salt = os.urandom(SALT_LENGTH)
    return base64.b64encode(salt + _digest(algorithm, salt, password)).decode("ascii")


def hash_form_error(password_hash: str, algorithm: HashingAlgorithm) -> str | None:
    """Return why ``password_hash`` is not a stored hash for ``algorithm``, or None."""
    expected = SALT_LENGTH + algorithm.digest_size
    expected_chars = 4 * ((expected + 2) // 3)
    if _looks_hex(password_hash):
        return (
            f"it looks like a hex digest; the broker expects base64 of a 4-byte salt "
            f"followed by the {algorithm.short_name} digest ({expected_chars} characters), "
            "as printed by `provisioner hash-password`"
        )
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except (binascii.Error, ValueError):
        return (
            "it is not valid base64; write the hash printed by "
            "`provisioner hash-password` or by `rabbitmqctl hash_password`"
        )
    if len(raw) != expected:
        return (
            f"it decodes to {len(raw)} bytes but {algorithm.short_name} needs {expected} "
            f"(4-byte salt + {algorithm.digest_size}-byte digest); check hashing_algorithm"
        )
    return None


def _looks_hex(text: str) -> bool:
    digest_lengths = {32, 40, 64, 128}
    return len(text) in digest_lengths and all(
        c in "0123456789abcdefABCDEF" for c in text
    )


def password_matches(
    password: str, password_hash: str, algorithm: HashingAlgorithm
) -> bool:
    """Tell whether ``password`` hashes to ``password_hash`` with its own salt."""
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw) != SALT_LENGTH + algorithm.digest_size:
        return False
    salt, stored_digest = raw[:SALT_LENGTH], raw[SALT_LENGTH:]
    return hmac.compare_digest(_digest(algorithm, salt, password), stored_digest)
