"""Users: the `authentication.csv` file, its cached reader for requests, and its safe writer."""

from functions.users.directory import SeedUser, UserDirectory, UsersConflict, update_users
from functions.users.table import (
    COLUMNS,
    ROLES,
    User,
    UsersFileError,
    UserTable,
    check_new_email,
    format_users_csv,
    parse_users_csv,
)

__all__ = [
    "COLUMNS",
    "ROLES",
    "SeedUser",
    "User",
    "UserDirectory",
    "UserTable",
    "UsersConflict",
    "UsersFileError",
    "check_new_email",
    "format_users_csv",
    "parse_users_csv",
    "update_users",
]
