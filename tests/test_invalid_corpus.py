"""Every file in ``tests/invalid`` through the real ``validate`` and ``sync``.

``tests/invalid/expected.yaml`` gives each file's exit code and the phrases
its output must contain. Neither command may change the broker: a file that
fails validation must fail before the first request that changes anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioner.loader import MAX_FILE_BYTES
from provisioner.validate import load_users_file
from tests.provisioner_cli import definitions_snapshot, run_cli
from tests.rabbitmq_node import RabbitNode

CORPUS = Path(__file__).parent / "invalid"
EXPECTED: dict[str, dict[str, object]] = yaml.safe_load(
    (CORPUS / "expected.yaml").read_text(encoding="utf-8")
)
# Only these variables exist, so every other ${VAR} in the corpus is missing.
ENV = {"PW": "secret-pw", "EMPTY": ""}
SECRET = ENV["PW"]


def corpus_files() -> list[str]:
    return sorted(p.name for p in CORPUS.iterdir() if p.name != "expected.yaml")


def test_every_file_has_an_expectation() -> None:
    assert set(corpus_files()) == set(EXPECTED)
    assert len(EXPECTED) >= 40


def check_commands(
    node: RabbitNode, path: Path, exit_code: int, phrases: list[str]
) -> None:
    before = definitions_snapshot(node)
    for command in ("validate", "sync"):
        result = run_cli(node, command, users_file=path, env=ENV, timeout=60)
        output = result.stdout + result.stderr
        assert result.returncode == exit_code, f"{command}: {output}"
        for phrase in phrases:
            assert phrase in output, f"{command}: {phrase!r} missing from {output}"
        assert "Traceback" not in output, f"{command}: {output}"
        assert SECRET not in output, f"{command} printed a password"
    assert definitions_snapshot(node) == before


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file(clean_broker: RabbitNode, name: str) -> None:
    expected = EXPECTED[name]
    phrases = expected["contains"]
    assert isinstance(phrases, list)
    check_commands(clean_broker, CORPUS / name, int(str(expected["exit"])), phrases)


def test_file_over_size_limit(clean_broker: RabbitNode, tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    with path.open("wb") as handle:
        handle.write(b"users: []\n")
        handle.write(b"#" * MAX_FILE_BYTES)
    check_commands(clean_broker, path, 2, [f"over the limit of {MAX_FILE_BYTES}"])


def test_1e3_stays_text(tmp_path: Path) -> None:
    # PyYAML follows YAML 1.1, where a float needs a dot, so 1e3 is a string
    # (YAML 1.2 would read the number 1000.0).
    path = tmp_path / "users.yaml"
    path.write_text("users: [{name: 1e3, password: x}]\n", encoding="utf-8")
    assert load_users_file(path, {}).users[0].name == "1e3"
