"""`python -m functions.users`: manage the users file on a local folder or a bucket.

Commands: add, disable, enable, set-password, set-role, list, hash. Every change goes through
`update_users` (conditional writes, retried), so it is safe while functions run and while another
administrator edits users. Passwords are read from a prompt or, for scripts, one line of standard
input (`--password-stdin`); never from the command line, where they would land in shell history.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from common.settings import EnvReader, SettingsError, load_environment
from functions.passwords import MAX_PASSWORD_BYTES, PasswordHasher, password_within_limits
from functions.settings import PasswordHashSettings
from functions.users.directory import UsersConflict, update_users
from functions.users.table import (
    ROLES,
    User,
    UsersFileError,
    UserTable,
    check_new_email,
    parse_users_csv,
)
from storage import ObjectNotFound, StorageError, StorageSettings, Store, keys
from storage.areas import open_areas

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xray-users", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    add = commands.add_parser("add", help="add a user")
    add.add_argument("email", help="the username (usually an e-mail address)")
    add.add_argument("--role", choices=ROLES, default="user")
    add.add_argument("--id", dest="user_id", default=None, help="default: the next number")
    add.add_argument("--disabled", action="store_true", help="add the user disabled")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    for name, text in (
        ("disable", "refuse the user's logins and tokens"),
        ("enable", "let a disabled user in again"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("user", help="id or username")

    password = commands.add_parser("set-password", help="replace a user's password")
    password.add_argument("user", help="id or username")
    password.add_argument("--password-stdin", action="store_true")

    role = commands.add_parser("set-role", help="make a user an admin or a plain user")
    role.add_argument("user", help="id or username")
    role.add_argument("role", choices=ROLES)

    listing = commands.add_parser("list", help="list users (never their hashes)")
    listing.add_argument("--json", action="store_true")

    hashing = commands.add_parser("hash", help="print the hash of a password")
    hashing.add_argument("--password-stdin", action="store_true")
    return parser


def _read_password(from_stdin: bool, stdin: TextIO, confirm: bool) -> str:
    if from_stdin:
        password = stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if confirm and getpass.getpass("again: ") != password:
            raise ValueError("the passwords differ")
    if not password_within_limits(password):
        raise ValueError(f"a password must be 1 to {MAX_PASSWORD_BYTES} bytes")
    return password


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    arguments = _parser().parse_args(argv)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    env = EnvReader(load_environment() if environ is None else environ, "users CLI")
    storage_settings = StorageSettings.read(env)
    hasher = PasswordHasher(PasswordHashSettings.read(env))
    try:
        env.check()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        if arguments.command == "hash":
            print(hasher.hash(_read_password(arguments.password_stdin, stdin, True)), file=stdout)
            return 0
        store = open_areas(storage_settings).auth
        if arguments.command == "list":
            table = _read_table(store)
            _print_users(table, arguments.json, stdout)
            return 0
        change = _change_for(arguments, hasher, stdin)
        table = update_users(store, change)
        print(f"{arguments.command}: done ({len(table.users)} users)", file=stdout)
        return 0
    except (ValueError, UsersFileError, UsersConflict, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _read_table(store: Store) -> UserTable:
    try:
        return parse_users_csv(store.get_bytes(keys.USERS_FILE))
    except ObjectNotFound:
        return UserTable()


def _print_users(table: UserTable, as_json: bool, stdout: TextIO) -> None:
    if as_json:
        print(json.dumps([user.profile() for user in table.users], indent=2), file=stdout)
    else:
        for user in table.users:
            state = "disabled" if user.disabled else "enabled"
            print(f"{user.id}\t{user.email}\t{user.role}\t{state}", file=stdout)
    for problem in table.problems:
        print(f"warning: skipped {problem}", file=sys.stderr)


def _change_for(
    arguments: argparse.Namespace, hasher: PasswordHasher, stdin: TextIO
) -> Callable[[UserTable], UserTable]:
    """The table change a command makes (hashing happens once, outside the retry loop)."""
    command = arguments.command
    if command == "add":
        email = check_new_email(arguments.email)
        hashed = hasher.hash(_read_password(arguments.password_stdin, stdin, True))

        def add(table: UserTable) -> UserTable:
            user_id = arguments.user_id or table.next_id()
            return table.added(User(user_id, email, arguments.role, hashed, arguments.disabled))

        return add
    if command in ("disable", "enable"):
        disabled = command == "disable"
        return lambda table: table.updated(arguments.user, disabled=disabled)
    if command == "set-password":
        hashed = hasher.hash(_read_password(arguments.password_stdin, stdin, True))
        return lambda table: table.updated(arguments.user, hashed_password=hashed)
    if command == "set-role":
        return lambda table: table.updated(arguments.user, role=arguments.role)
    raise ValueError(f"unknown command {command}")
