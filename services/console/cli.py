"""`leadwire console add-user NAME`: hash an operator's password for CONSOLE_USERS; `leadwire console run`."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from services.console.security import hash_password

MIN_PASSWORD_LENGTH = 12


def register(subparsers: Any) -> None:
    console = subparsers.add_parser("console", help="the operator's console").add_subparsers(
        dest="console_command", required=True
    )
    add = console.add_parser("add-user", help="print the CONSOLE_USERS entry (name:argon2 hash) for an operator")
    add.add_argument("name", help="the operator's user name (letters, digits, . _ - @)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(func=_cmd_add_user)
    console.add_parser("run", help="run the console (CONSOLE_HOST:CONSOLE_PORT)").set_defaults(func=_cmd_run)


def _cmd_add_user(args: argparse.Namespace) -> int:
    name = args.name
    if not name or any(not (c.isalnum() or c in "._-@") for c in name):
        sys.stderr.write("leadwire: a user name is letters, digits and . _ - @ only\n")
        return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            sys.stderr.write("leadwire: the passwords differ\n")
            return 2
    if len(password) < MIN_PASSWORD_LENGTH:
        sys.stderr.write(f"leadwire: use a password of at least {MIN_PASSWORD_LENGTH} characters\n")
        return 2
    sys.stdout.write(f"{name}:{hash_password(password)}\n")
    sys.stderr.write("Add that entry to CONSOLE_USERS (entries separated by spaces). In .env, put the value in single "
                     "quotes; in docker-compose.yml, write each $ as $$.\n")
    return 0


def _cmd_run(_: argparse.Namespace) -> int:
    from shared.cli import run_event_loop, run_services
    from shared.settings import Settings

    run_event_loop(run_services(["console"], Settings()))
    return 0
