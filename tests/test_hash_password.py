"""The hash-password command: input handling and the printed hash."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

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

        monkeypatch.setattr("getpass.getpass", fake_getpass)
        assert read_new_password(FakeTerminal()) == "tty-pw"
        assert len(prompts) == 2

    def test_terminal_mismatch_rejected(self, monkeypatch):
        answers = iter(["one", "two"])
        monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
        with pytest.raises(PasswordInputError, match="differ"):
            read_new_password(FakeTerminal())

    def test_terminal_empty_rejected(self, monkeypatch):
        monkeypatch.setattr("getpass.getpass", lambda prompt: "")
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


def run_on_terminal(*answers: str) -> tuple[int, str]:
    """Run hash-password with a pseudo-terminal as its controlling terminal."""
    import os
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child process
        os.environ["PYTHONPATH"] = str(REPO)
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "provisioner", "hash-password"])
    import select

    output = b""
    answered = 0
    while select.select([fd], [], [], 20)[0]:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        # Answer each prompt once it is complete, since getpass discards
        # input typed before it switched echo off.
        prompts = output.count(b"assword: ")
        if answered < min(prompts, len(answers)):
            os.write(fd, answers[answered].encode() + b"\n")
            answered += 1
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode("utf-8", "replace")


def test_terminal_prompts_twice_without_echo():
    code, output = run_on_terminal("tty-secret-1", "tty-secret-1")
    assert code == 0, output
    assert output.count("assword") == 2
    assert "tty-secret-1" not in output
    printed = output.strip().splitlines()[-1].strip()
    assert password_matches("tty-secret-1", printed, HashingAlgorithm.SHA256)


def test_terminal_mismatch_exits_2():
    code, output = run_on_terminal("tty-secret-1", "tty-secret-2")
    assert code == 2
    assert "differ" in output
