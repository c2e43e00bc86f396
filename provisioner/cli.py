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
  2  invalid users file, settings or flags; nothing was changed
  3  the broker was not ready before the wait deadline
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
    _add(commands, common, "wait", "wait until the broker is ready, then exit")
    commands.add_parser("schema", help="print the JSON Schema of users.yaml")
    return parser


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
        help="seconds to wait for the broker (default 120)",
    )
    common.add_argument(
        "--request-timeout", type=float, help="seconds per HTTP request (default 10)"
    )
    common.add_argument(
        "--ca-bundle", help="CA certificates file for an https management URL"
    )
    common.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper
    )
    common.add_argument("--log-format", choices=["text", "json"])
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
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        return _schema()

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


def _validate(args: argparse.Namespace, settings: Settings) -> int:
    from provisioner.runner import load_declared

    declared = load_declared(settings)
    users = len(declared.state.users)
    vhosts = len(declared.state.vhosts)
    print(f"{settings.users_file}: valid ({users} users, {vhosts} vhosts)")
    return EXIT_OK


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
    from provisioner.runner import apply, compute_plan, connect, load_declared

    declared = load_declared(settings)
    client = connect(settings)
    outcome = compute_plan(client, declared, settings)
    # The parsed file is not needed to apply the plan. Releasing it before
    # the import is built lowers the peak memory of a large sync.
    del declared
    if outcome.changes:
        apply(client, outcome, settings)
    print(summary(outcome.changes).replace("Plan:", "Applied:"))
    return EXIT_OK


def _wait(args: argparse.Namespace, settings: Settings) -> int:
    from provisioner.readiness import wait_until_ready
    from provisioner.runner import connect

    wait_until_ready(connect(settings), settings.wait_timeout)
    print(f"the broker at {settings.management_url} is ready")
    return EXIT_OK


_COMMANDS: dict[str, Command] = {
    "validate": _validate,
    "plan": _plan,
    "sync": _sync,
    "wait": _wait,
}
