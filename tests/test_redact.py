"""Registered secrets are masked wherever they appear in a line."""

from __future__ import annotations

import pytest

from provisioner import redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x r3d-abcdef y r3d-abcd z", "x *** y *** z"),
        ("r3d-abcdr3d-abcd", "******"),
        ("r3d-abcdefr3d-abcd", "******"),
        ("nothing secret", "nothing secret"),
        ("r3d", "r3d"),
    ],
)
def test_redact_masks_registered(text: str, expected: str) -> None:
    redact.register("r3d-abcd")
    redact.register("r3d-abcdef")
    assert redact.redact(text) == expected


def test_redact_many_secrets() -> None:
    for index in range(2000):
        redact.register(f"many-secret-{index:05d}")
    assert redact.redact("a many-secret-01999 b") == "a *** b"
