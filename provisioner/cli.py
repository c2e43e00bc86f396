"""Command line: ``python -m provisioner COMMAND``.

Only argparse is imported at start-up; each command imports what it needs,
so ``--help`` stays fast on a small shared CPU. Errors become exit codes
here and nowhere else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provisioner.settings import Settings

EXIT_OK = 0
EXIT_APPLY_FAILED = 1
EXIT_INVALID = 2
EXIT_NOT_READY = 3
EXIT_CHANGES_PENDING = 4

EPILOG = """\
exit codes:
  0  success (plan: nothing to do with --detailed-exitcode)
  1  failed while talking to the broker or applying changes; run again to finish
     (verify: the broker allowed or refused something against the file)
  2  invalid users file, settings or flags; nothing was changed
  3  the broker was not ready before the wait deadline (verify: not reachable)
  4  plan --detailed-exitcode: changes are pending

settings come from PROVISIONER_* environment variables; flags override them.
"""

Command = Callable[[argparse.Namespace, "Settings"], int]


def build_parser() -> argparse.ArgumentParser:
    """Build the parser for every command."""
    parser = argparse.ArgumentParser(
        prog="provisioner",
        description="Provision RabbitMQ users, vhosts and grants from users.yaml.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = _common_options()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add(
        commands,
        common,
        "validate",
        "check the users file without contacting the broker",
    )
    plan = _add(commands, common, "plan", "show the changes sync would make")
    plan.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when nothing is to be done and 4 when changes are pending",
    )
    sync = _add(
        commands, common, "sync", "wait for the broker and apply the users file"
    )
    sync.add_argument(
        "--dry-run", action="store_true", help="only show the plan, as `plan` does"
    )
    sync.add_argument(
        "--close-connections",
        action="store_true",
        default=None,
        help="after applying, close the open connections of users whose password "
        "changed or who were deleted (PROVISIONER_CLOSE_CONNECTIONS)",
    )
    _add(commands, common, "wait", "wait until the broker is ready, then exit")
    serve = _add(
        commands,
        common,
        "serve",
        "sidecar mode: wait, sync, then exit or keep reconciling (PROVISIONER_RECONCILE_INTERVAL)",
    )
    serve.add_argument(
        "--reconcile-interval",
        type=float,
        help="seconds between syncs; 0 exits after the first sync "
        "(PROVISIONER_RECONCILE_INTERVAL, default 0)",
    )
    explain = _add(
        commands,
        common,
        "explain",
        "show each user's compiled permissions and their source",
    )
    explain.add_argument("--user", action="append", help="only this user (repeatable)")
    export = _add(
        commands,
        common,
        "export",
        "write a users.yaml describing the live broker, with password hashes",
    )
    export.add_argument(
        "-o",
        "--output",
        help="file to write, created with mode 0600 (default: standard output)",
    )
    _add_verify(commands, common)
    commands.add_parser("schema", help="print the JSON Schema of users.yaml")
    hasher = commands.add_parser(
        "hash-password",
        help="print the broker's stored form of a password read without echo",
        description="Read a password (typed twice on a terminal, else the first "
        "line of standard input) and print its hash for password_hash. The "
        "password is never taken from the command line.",
    )
    hasher.add_argument(
        "--algorithm",
        choices=["sha256", "sha512", "md5"],
        default="sha256",
        help="hashing algorithm; write the same value as hashing_algorithm "
        "(default sha256; md5 is legacy and weak)",
    )
    return parser


def _add_verify(commands: Any, common: argparse.ArgumentParser) -> None:
    verify = _add(
        commands,
        common,
        "verify",
        "log in over MQTT as each user with an mqtt block and check what the "
        "broker allows (needs the mqtt extra)",
    )
    verify.add_argument("--user", action="append", help="only this user (repeatable)")
    verify.add_argument(
        "--mqtt-url",
        help="MQTT-over-WebSocket URL (PROVISIONER_MQTT_URL, default ws://127.0.0.1:15675/ws)",
    )
    verify.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=5.0,
        help="seconds each probe waits for the broker (default 5)",
    )


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid number of seconds: {text!r}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-f",
        "--file",
        dest="users_file",
        help="users file (PROVISIONER_USERS_FILE, default users.yaml)",
    )
    common.add_argument(
        "--management-url",
        help="management API base URL (PROVISIONER_MANAGEMENT_URL, default http://127.0.0.1:15672)",
    )
    common.add_argument(
        "--username",
        help="login user (PROVISIONER_USERNAME); the password is read only from "
        "PROVISIONER_PASSWORD or RABBITMQ_DEFAULT_PASS, never from a flag",
    )
    common.add_argument(
        "--wait-timeout",
        type=float,
        help="seconds to wait for the broker (PROVISIONER_WAIT_TIMEOUT, default 120)",
    )
    common.add_argument(
        "--request-timeout",
        type=float,
        help="seconds per HTTP request (PROVISIONER_REQUEST_TIMEOUT, default 10)",
    )
    common.add_argument(
        "--ca-bundle",
        help="CA certificates file for an https management URL or a wss MQTT URL",
    )
    common.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log level on stderr (PROVISIONER_LOG_LEVEL, default INFO)",
    )
    common.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text or one JSON object each (PROVISIONER_LOG_FORMAT)",
    )
    return common


def _add(
    commands: Any, common: argparse.ArgumentParser, name: str, text: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, parents=[common], help=text
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    try:
        code = _run(argv)
        # Flush here, where a closed pipe can still be handled.
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of stdout went away (`provisioner schema | head`): not an
        # error. Point stdout at /dev/null so the interpreter's final flush
        # does not fail again.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return code


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        return _schema()
    if args.command == "hash-password":
        return _hash_password(args)

    from provisioner.errors import ProvisionerError
    from provisioner.logs import configure_logging
    from provisioner.redact import redact
    from provisioner.settings import load_settings

    try:
        settings = load_settings(_overrides(args))
        configure_logging(settings.log_level, settings.log_format)
        return _COMMANDS[args.command](args, settings)
    except ProvisionerError as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        # A bug must not print a secret: the traceback goes through the same
        # masking as every log line before it reaches stderr.
        import traceback

        print(redact(traceback.format_exc()), file=sys.stderr)
        print("error: unexpected failure (a bug); run again to finish", file=sys.stderr)
        return EXIT_APPLY_FAILED


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "users_file",
        "management_url",
        "username",
        "wait_timeout",
        "request_timeout",
        "ca_bundle",
        "log_level",
        "log_format",
        "reconcile_interval",
        "close_connections",
        "mqtt_url",
    )
    return {name: getattr(args, name, None) for name in names}


def _schema() -> int:
    import json

    from provisioner.spec import UsersFile

    schema = UsersFile.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "users.yaml"
    print(json.dumps(schema, indent=2))
    return EXIT_OK


def _hash_password(args: argparse.Namespace) -> int:
    from provisioner.password_input import PasswordInputError, read_new_password
    from provisioner.passwords import HashingAlgorithm, hash_password

    algorithm = HashingAlgorithm.from_short_name(args.algorithm)
    if algorithm == HashingAlgorithm.MD5:
        print(
            "warning: md5 is a legacy algorithm that is fast to brute-force; "
            "prefer sha256 or sha512",
            file=sys.stderr,
        )
    try:
        password = read_new_password(sys.stdin)
    except PasswordInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except (EOFError, KeyboardInterrupt):
        print("error: no password was entered", file=sys.stderr)
        return EXIT_INVALID
    print(hash_password(password, algorithm))
    return EXIT_OK


def _validate(args: argparse.Namespace, settings: Settings) -> int:
    from provisioner.runner import load_declared, reject_login_lockout

    declared = load_declared(settings)
    # The file alone can already lock the login out; no broker is needed.
    reject_login_lockout(declared, settings)
    users = len(declared.state.users)
    vhosts = len(declared.state.vhosts)
    print(
        f"{settings.users_file}: valid ({_count(users, 'user')}, {_count(vhosts, 'vhost')})"
    )
    return EXIT_OK


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _plan(args: argparse.Namespace, settings: Settings) -> int:
    from provisioner.report import render_plan
    from provisioner.runner import compute_plan, connect, load_declared

    declared = load_declared(settings)
    outcome = compute_plan(connect(settings), declared, settings)
    print(render_plan(outcome.changes))
    if getattr(args, "detailed_exitcode", False) and outcome.changes:
        return EXIT_CHANGES_PENDING
    return EXIT_OK


def _sync(args: argparse.Namespace, settings: Settings) -> int:
    if args.dry_run:
        return _plan(args, settings)
    from provisioner.report import summary
    from provisioner.runner import connect, load_declared, sync

    declared = load_declared(settings)
    changes = sync(connect(settings), declared, settings)
    print(summary(changes).replace("Plan:", "Applied:"))
    return EXIT_OK


def _wait(args: argparse.Namespace, settings: Settings) -> int:
    from provisioner.readiness import wait_until_ready
    from provisioner.runner import connect

    wait_until_ready(connect(settings), settings.wait_timeout)
    print(f"the broker at {settings.management_url} is ready")
    return EXIT_OK


def _explain(args: argparse.Namespace, settings: Settings) -> int:
    from provisioner.errors import InvalidInput, Problem
    from provisioner.explain import explain_users
    from provisioner.runner import load_users

    users = load_users(settings).users
    if args.user:
        unknown = sorted(set(args.user) - {user.name for user in users})
        if unknown:
            raise InvalidInput(
                [
                    Problem("--user", f"user {name!r} is not declared in the file")
                    for name in unknown
                ]
            )
        users = [user for user in users if user.name in args.user]
    print(explain_users(users))
    return EXIT_OK


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from provisioner.errors import MissingDependency

    try:
        # paho.mqtt.enums exists from paho-mqtt 2.0, whose callback API
        # verify uses, so this also catches a 1.x install.
        import paho.mqtt.enums  # noqa: F401
    except ImportError:
        raise MissingDependency(
            "verify needs paho-mqtt 2.0 or later, which is not installed; "
            "install it with: pip install 'miyako-provisioner[mqtt]'"
        ) from None

    from provisioner.runner import declare, load_users
    from provisioner.verify import (
        endpoint_from,
        render_report,
        select_users,
        verify_users,
    )

    users_file = load_users(settings)
    declared = declare(users_file, settings)
    users = select_users(users_file.users, args.user)
    endpoint = endpoint_from(settings, args.timeout)
    report = verify_users(users, declared.state, endpoint)
    print(render_report(report))
    if not report.rows:
        print(
            "error: no user was verified, because every selected user is declared "
            "with password_hash only; verify needs the clear-text password",
            file=sys.stderr,
        )
        return EXIT_INVALID
    return EXIT_APPLY_FAILED if report.surprises else EXIT_OK


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from provisioner.serve import Signals, serve

    signals = Signals(broker_pid=settings.broker_pid)
    signals.install()
    return serve(settings, signals)


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from provisioner.export import export_document, render, write_private
    from provisioner.readiness import wait_until_ready
    from provisioner.runner import connect

    client = connect(settings)
    wait_until_ready(client, settings.wait_timeout)
    document = export_document(client)
    text = render(document)
    users = len(document["users"])
    if args.output is None:
        sys.stdout.write(text)
        print(
            f"exported {users} users; the output contains password hashes, "
            "including the administrator's",
            file=sys.stderr,
        )
        return EXIT_OK
    write_private(Path(args.output), text)
    print(
        f"wrote {users} users to {args.output} with mode 0600: it contains "
        "password hashes, including the administrator's",
        file=sys.stderr,
    )
    return EXIT_OK


_COMMANDS: dict[str, Command] = {
    "serve": _serve,
    "explain": _explain,
    "verify": _verify,
    "validate": _validate,
    "plan": _plan,
    "sync": _sync,
    "wait": _wait,
    "export": _export,
}
