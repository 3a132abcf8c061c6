"""The users file in the original format: `id;email;role;hashed_password;disabled`.

Parsing is lenient per row (a malformed row is skipped and reported, so one bad line does not
lock every user out); writing is strict: RFC 4180 quoting through the `csv` module, and every
field checked so that nothing can forge a row or start a spreadsheet formula (ASVS 1.2.10).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from storage import keys

__all__ = [
    "COLUMNS",
    "ROLES",
    "User",
    "UserTable",
    "UsersFileError",
    "check_new_email",
    "format_users_csv",
    "parse_users_csv",
]

COLUMNS = ("id", "email", "role", "hashed_password", "disabled")
ROLES = ("user", "admin")

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}
# Usernames are usually e-mail addresses; the original system also had plain names. Starting
# with a letter or digit rules out formulas (= + - @) and the allowlist rules out ';', quotes
# and line breaks, so a username can never forge a row.
_EMAIL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._%+@-]{0,253}$")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0")


class UsersFileError(ValueError):
    """The users file cannot be used as it is (bad header, or malformed rows on update)."""


@dataclass(frozen=True)
class User:
    id: str
    email: str
    role: str
    hashed_password: str
    disabled: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def profile(self) -> dict[str, object]:
        """What a caller may see about a user: never the hash."""
        return {"id": self.id, "email": self.email, "role": self.role, "disabled": self.disabled}


def check_new_email(email: str) -> str:
    """A username fit to be written to the file, or ValueError."""
    email = email.strip()
    if not _EMAIL_RE.match(email):
        raise ValueError(
            "a username (e-mail) starts with a letter or digit and holds only letters, "
            "digits and . _ % + @ - (at most 254 characters)"
        )
    return email


@dataclass(frozen=True)
class UserTable:
    users: tuple[User, ...] = ()
    # One line per skipped row ("line 7: unknown role"); never the row's content.
    problems: tuple[str, ...] = ()

    def by_id(self, user_id: str) -> User | None:
        return next((user for user in self.users if user.id == user_id), None)

    def by_email(self, email: str) -> User | None:
        wanted = email.strip().casefold()
        return next((user for user in self.users if user.email.casefold() == wanted), None)

    def find(self, id_or_email: str) -> User | None:
        return self.by_id(id_or_email) or self.by_email(id_or_email)

    def next_id(self) -> str:
        """The original system numbered its users: one more than the largest numeric id."""
        numbers = [int(user.id) for user in self.users if user.id.isascii() and user.id.isdigit()]
        return str(max(numbers, default=0) + 1)

    def added(self, user: User) -> UserTable:
        if self.by_id(user.id) is not None:
            raise ValueError(f"a user with id {user.id} already exists")
        if self.by_email(user.email) is not None:
            raise ValueError(f"a user named {user.email} already exists")
        return UserTable(users=(*self.users, user), problems=self.problems)

    def replaced(self, user: User) -> UserTable:
        if self.by_id(user.id) is None:
            raise ValueError(f"no user with id {user.id}")
        return UserTable(
            users=tuple(user if existing.id == user.id else existing for existing in self.users),
            problems=self.problems,
        )

    def updated(self, id_or_email: str, **changes: object) -> UserTable:
        user = self.find(id_or_email)
        if user is None:
            raise ValueError(f"no user {id_or_email}")
        return self.replaced(replace(user, **changes))  # type: ignore[arg-type]


def _parse_disabled(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("disabled is not true/false")


def parse_users_csv(data: bytes) -> UserTable:
    """Parse the file; rows that cannot be used are skipped and listed in `problems`."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsersFileError("the users file is not UTF-8") from exc
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=";", strict=True)
    try:
        header = next(rows, None)
    except csv.Error as exc:
        raise UsersFileError("the users file header is not valid CSV") from exc
    if header is None:
        return UserTable()
    if tuple(column.strip().lower() for column in header[: len(COLUMNS)]) != COLUMNS:
        raise UsersFileError(f"the users file header must be {';'.join(COLUMNS)}")
    users: list[User] = []
    problems: list[str] = []
    seen_ids: set[str] = set()
    seen_emails: set[str] = set()
    line = 1
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error:
            problems.append(f"line {rows.line_num}: not valid CSV")
            break
        line = rows.line_num
        if not row or all(not field.strip() for field in row):
            continue
        try:
            user = _row_to_user(row)
        except ValueError as exc:
            problems.append(f"line {line}: {exc}")
            continue
        if user.id in seen_ids or user.email.casefold() in seen_emails:
            problems.append(f"line {line}: duplicate id or username")
            continue
        seen_ids.add(user.id)
        seen_emails.add(user.email.casefold())
        users.append(user)
    return UserTable(users=tuple(users), problems=tuple(problems))


def _row_to_user(row: list[str]) -> User:
    if len(row) < len(COLUMNS):
        raise ValueError(f"expected {len(COLUMNS)} fields")
    user_id, email, role, hashed_password, disabled = (field.strip() for field in row[:5])
    try:
        keys.check_user_id(user_id)
    except ValueError:
        raise ValueError("invalid id") from None
    if not email or any(ch in email for ch in "\r\n\0"):
        raise ValueError("invalid username")
    if role not in ROLES:
        raise ValueError("unknown role")
    if not hashed_password:
        raise ValueError("no password hash")
    return User(user_id, email, role, hashed_password, _parse_disabled(disabled))


def _safe_field(value: str) -> str:
    if not value or value.startswith(_FORMULA_STARTS) or any(c in value for c in "\r\n\0"):
        raise UsersFileError("refusing to write a field that could forge a row or a formula")
    return value


def format_users_csv(users: Iterable[User]) -> bytes:
    """The file's bytes: header plus one RFC 4180 row per user (CRLF line ends)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(COLUMNS)
    for user in users:
        keys.check_user_id(user.id)
        if user.role not in ROLES:
            raise UsersFileError(f"unknown role {user.role!r}")
        writer.writerow(
            (
                _safe_field(user.id),
                _safe_field(user.email),
                user.role,
                _safe_field(user.hashed_password),
                "True" if user.disabled else "False",
            )
        )
    return buffer.getvalue().encode("utf-8")
