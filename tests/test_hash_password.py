"""The hash-password command: input handling and the printed hash."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from provisioner import password_input
from provisioner.password_input import PasswordInputError, read_new_password
from provisioner.passwords import HashingAlgorithm, hash_form_error, password_matches
from tests.provisioner_cli import REPO


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_hash(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioner", "hash-password", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


class TestReadNewPassword:
    def test_pipe_uses_first_line_only(self):
        assert read_new_password(io.StringIO("first\nsecond\n")) == "first"

    def test_pipe_strips_crlf(self):
        assert read_new_password(io.StringIO("pw\r\n")) == "pw"

    def test_pipe_keeps_inner_spaces(self):
        assert read_new_password(io.StringIO(" a b \n")) == " a b "

    def test_empty_pipe_rejected(self):
        with pytest.raises(PasswordInputError, match="empty"):
            read_new_password(io.StringIO(""))

    def test_terminal_asks_twice(self, monkeypatch):
        answers = iter(["tty-pw", "tty-pw"])
        prompts: list[str] = []

        def fake_getpass(prompt: str) -> str:
            prompts.append(prompt)
            return next(answers)

        monkeypatch.setattr(password_input.getpass, "getpass", fake_getpass)
        assert read_new_password(FakeTerminal()) == "tty-pw"
        assert len(prompts) == 2

    def test_terminal_mismatch_rejected(self, monkeypatch):
        answers = iter(["one", "two"])
        monkeypatch.setattr(
            password_input.getpass, "getpass", lambda prompt: next(answers)
        )
        with pytest.raises(PasswordInputError, match="differ"):
            read_new_password(FakeTerminal())

    def test_terminal_empty_rejected(self, monkeypatch):
        monkeypatch.setattr(password_input.getpass, "getpass", lambda prompt: "")
        with pytest.raises(PasswordInputError, match="empty"):
            read_new_password(FakeTerminal())


@pytest.mark.parametrize("algorithm", ["sha256", "sha512", "md5"])
def test_command_prints_matching_hash(algorithm):
    result = run_hash("pässword-1\n", "--algorithm", algorithm)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip()
    member = HashingAlgorithm.from_short_name(algorithm)
    assert result.stdout.count("\n") == 1
    assert hash_form_error(printed, member) is None
    assert password_matches("pässword-1", printed, member)
    assert "pässword-1" not in result.stdout + result.stderr


def test_command_defaults_to_sha256():
    result = run_hash("pw-default\n")
    assert result.returncode == 0, result.stderr
    assert password_matches(
        "pw-default", result.stdout.strip(), HashingAlgorithm.SHA256
    )
    assert result.stderr == ""


def test_command_warns_about_md5():
    result = run_hash("pw\n", "--algorithm", "md5")
    assert result.returncode == 0
    assert "md5" in result.stderr
    assert "warning" in result.stderr


def test_command_empty_password_exits_2():
    result = run_hash("\n")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "empty" in result.stderr


def test_command_refuses_password_argument():
    result = run_hash("", "argv-password")
    assert result.returncode == 2
    assert result.stdout == ""


def test_command_rejects_unknown_algorithm():
    result = run_hash("pw\n", "--algorithm", "sha1")
    assert result.returncode == 2
    assert result.stdout == ""
