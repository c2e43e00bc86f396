import base64

import pytest

from provisioner.passwords import (
    HashingAlgorithm,
    hash_form_error,
    hash_password,
    password_matches,
)

# Stored by a RabbitMQ 3.10.8 broker for the password "x".
BROKER_SHA256 = "1dwLFDYIeUIXZmJnyhdvnfov8sppYfu424IVT1VTh+dO5wx6"


def test_matches_hash_stored_by_broker():
    assert password_matches("x", BROKER_SHA256, HashingAlgorithm.SHA256)
    assert not password_matches("y", BROKER_SHA256, HashingAlgorithm.SHA256)


@pytest.mark.parametrize("algorithm", list(HashingAlgorithm))
def test_hash_round_trip(algorithm):
    stored = hash_password("pässwörd ✓", algorithm)
    assert password_matches("pässwörd ✓", stored, algorithm)
    assert not password_matches("password", stored, algorithm)
    assert hash_form_error(stored, algorithm) is None


@pytest.mark.parametrize(
    ("algorithm", "length"),
    [
        (HashingAlgorithm.SHA256, 36),
        (HashingAlgorithm.SHA512, 68),
        (HashingAlgorithm.MD5, 20),
    ],
)
def test_hash_length_is_salt_plus_digest(algorithm, length):
    assert len(base64.b64decode(hash_password("a", algorithm))) == length


def test_fresh_salt_each_time():
    assert hash_password("same") != hash_password("same")


def test_hex_digest_rejected_with_hint():
    hex_digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    message = hash_form_error(hex_digest, HashingAlgorithm.SHA256)
    assert message is not None
    assert "hex digest" in message
    assert "hash-password" in message


def test_wrong_length_names_expected_bytes():
    message = hash_form_error("AAAAAAAAAAAAAAAAAAAAAAAAAAA=", HashingAlgorithm.SHA256)
    assert message is not None
    assert "36" in message


def test_sha512_hash_declared_as_sha256_rejected():
    stored = hash_password("a", HashingAlgorithm.SHA512)
    assert hash_form_error(stored, HashingAlgorithm.SHA256) is not None


def test_not_base64_rejected():
    assert "base64" in (
        hash_form_error("not base64 at all!", HashingAlgorithm.SHA256) or ""
    )


def test_missing_algorithm_means_md5():
    assert HashingAlgorithm.from_broker(None) is HashingAlgorithm.MD5
    assert HashingAlgorithm.from_broker("") is HashingAlgorithm.MD5
