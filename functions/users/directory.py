"""Reading the users file on the request path, and changing it safely from the CLI.

`UserDirectory` keeps the parsed file per process and revalidates it by version tag at most every
`cache_seconds` (a HEAD, and a GET only when the file changed), so a user disabled since a token
was issued is refused within that time without parsing the file on every request. One request
revalidates at a time while the others answer from the cache, and a storage outage is bridged
from the cache for a bounded time (`stale_seconds`).
`update_users` is the writer of every change people make: read, change, conditional write
(`if_match` / `if_none_match`), re-read and retry on conflict (`storage.update_object`), so two
concurrent changes both survive (DESIGN decision 5). The login path writes one thing only,
`UserDirectory.replace_password_hash` (a legacy hash upgraded after a successful login): one
conditional write and no retry, so any change made meanwhile wins and the upgrade is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from common.logs import log_event
from functions.passwords import PasswordHasher
from functions.users.table import (
    User,
    UsersFileError,
    UserTable,
    check_new_email,
    format_users_csv,
    parse_users_csv,
)
from storage import (
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    Store,
    UpdateConflict,
    keys,
    update_object,
)

__all__ = ["SeedUser", "UserDirectory", "UsersConflict", "update_users"]

logger = logging.getLogger(__name__)

_CONTENT_TYPE = "text/csv; charset=utf-8"


class UsersConflict(RuntimeError):
    """The users file kept changing under us for every attempt."""


@dataclass(frozen=True)
class SeedUser:
    """The first user (API_USER_EMAIL / API_USER_PASSWORD), created when no users file exists."""

    email: str
    password: str


def update_users(
    store: Store,
    change: Callable[[UserTable], UserTable],
    *,
    attempts: int = 8,
    sleep: Callable[[float], None] = time.sleep,
) -> UserTable:
    """Apply `change` to the users file with a compare-and-swap loop; returns the table written.

    `change` gets the current table and returns the new one (it may raise ValueError to refuse).
    A file with malformed rows is never rewritten: they would be lost.
    """

    def checked_change(table: UserTable) -> UserTable:
        if table.problems:
            raise UsersFileError(
                "the users file has rows that cannot be read ("
                + "; ".join(table.problems)
                + "); fix them before changing users"
            )
        return change(table)

    try:
        return update_object(
            store,
            keys.USERS_FILE,
            checked_change,
            parse=parse_users_csv,
            serialize=lambda table: format_users_csv(table.users),
            initial=UserTable,
            content_type=_CONTENT_TYPE,
            attempts=attempts,
            sleep=sleep,
        )
    except UpdateConflict as exc:
        raise UsersConflict(f"the users file changed during each of {attempts} attempts") from exc


class UserDirectory:
    """The users, as the request path sees them: cached per process, revalidated by version tag.

    One request at a time revalidates; the others meanwhile answer from the cached table, so a
    slow store holds up one request, not all. If the store fails (StorageError), the cached
    table keeps answering for `stale_seconds` beyond its normal `cache_seconds`, checked again
    once per `cache_seconds`: the trade-off is that a user disabled during a storage outage may
    still pass for that long. Without a cached table (or past that bound) the error propagates
    and the caller answers 503.
    """

    def __init__(
        self,
        store: Store,
        *,
        cache_seconds: float = 5.0,
        stale_seconds: float = 60.0,
        seed: SeedUser | None = None,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if seed is not None and hasher is None:
            raise ValueError("seeding a user needs a password hasher")
        self._store = store
        self._cache_seconds = cache_seconds
        self._stale_seconds = stale_seconds
        self._seed = seed
        self._hasher = hasher
        self._clock = clock
        # Held by the one request that revalidates; readers never wait on it while a table
        # they may still use is cached.
        self._refresh_lock = threading.Lock()
        self._table: UserTable | None = None
        self._etag: str | None = None
        self._checked_at = 0.0  # the last check, successful or not (paces the next one)
        self._validated_at = 0.0  # the last successful check (bounds serving a stale table)

    def _usable(self, now: float) -> UserTable | None:
        """The cached table if it may answer now without a check, else None."""
        table = self._table
        if (
            table is not None
            and now - self._checked_at < self._cache_seconds
            and self._within_stale_bound(now)
        ):
            return table
        return None

    def _within_stale_bound(self, now: float) -> bool:
        return now - self._validated_at < self._cache_seconds + self._stale_seconds

    def table(self) -> UserTable:
        """The current users (StorageError propagates when no usable table is cached)."""
        cached = self._usable(self._clock())
        if cached is not None:
            return cached
        table = self._table
        # Someone else is revalidating: answer from the cache while it is within its bound.
        wait = table is None or not self._within_stale_bound(self._clock())
        if not self._refresh_lock.acquire(blocking=wait):
            assert table is not None
            return table
        try:
            cached = self._usable(self._clock())
            if cached is not None:  # refreshed while this request waited
                return cached
            return self._refresh()
        finally:
            self._refresh_lock.release()

    def _refresh(self) -> UserTable:
        """Revalidate (holding the refresh lock); keep the cached table through an outage."""
        try:
            table = self._load()
        except StorageError as exc:
            now = self._clock()
            if self._table is None or not self._within_stale_bound(now):
                raise
            self._checked_at = now
            log_event(
                logger,
                "users_file_stale",
                logging.WARNING,
                "users file unreadable: answering from the copy checked "
                f"{now - self._validated_at:.0f} s ago",
                reason=type(exc).__name__,
            )
            return self._table
        self._table = table
        self._checked_at = self._validated_at = self._clock()
        return table

    def find_by_email(self, email: str) -> User | None:
        return self.table().by_email(email)

    def get(self, user_id: str) -> User | None:
        return self.table().by_id(user_id)

    def replace_password_hash(self, user_id: str, verified_hash: str, new_hash: str) -> str | None:
        """Swap one user's password hash by one conditional write: None once written, else a reason.

        For the login path, after the password was checked against `verified_hash`: the file is
        read afresh, the row must still hold `verified_hash` (a password set meanwhile wins),
        and the write carries `if_match` with the version just read, so a change of the file
        between read and write wins too (412: dropped, not retried; the next login tries again).
        A file with malformed rows is never rewritten (they would be lost). Never raises for
        storage or file problems: a dropped upgrade costs nothing but a later retry. The reasons:
        `file_changed`, `row_changed`, `malformed_rows`, `file_missing`, `storage_error`,
        `unwritable`.
        """
        try:
            stored = self._store.get(keys.USERS_FILE)
            table = parse_users_csv(stored.data)
            if table.problems:
                return "malformed_rows"
            user = table.by_id(user_id)
            if user is None or user.hashed_password != verified_hash:
                return "row_changed"
            updated = table.replaced(replace(user, hashed_password=new_hash))
            self._store.put(
                keys.USERS_FILE,
                format_users_csv(updated.users),
                content_type=_CONTENT_TYPE,
                if_match=stored.etag,
            )
        except PreconditionFailed:
            return "file_changed"
        except ObjectNotFound:
            return "file_missing"
        except StorageError:
            return "storage_error"
        except ValueError:  # UsersFileError, or a field the writer refuses
            return "unwritable"
        return None

    def _load(self) -> UserTable:
        try:
            unchanged = (
                self._table is not None
                and self._etag is not None
                and self._store.head(keys.USERS_FILE).etag == self._etag
            )
            if unchanged and self._table is not None:
                return self._table
            stored = self._store.get(keys.USERS_FILE)
        except ObjectNotFound:
            return self._seeded_table()
        table = parse_users_csv(stored.data)
        for problem in table.problems:
            log_event(
                logger, "users_file_line_skipped", logging.WARNING, f"users file: skipped {problem}"
            )
        self._etag = stored.etag
        return table

    def _seeded_table(self) -> UserTable:
        self._etag = None
        if self._seed is None or self._hasher is None:
            return UserTable()
        user = User(
            id="1",
            email=check_new_email(self._seed.email),
            role="admin",
            hashed_password=self._hasher.hash(self._seed.password),
        )
        table = UserTable(users=(user,))
        # Create-only: once the file exists it belongs to its users and is never re-seeded.
        try:
            info = self._store.put(
                keys.USERS_FILE,
                format_users_csv(table.users),
                content_type=_CONTENT_TYPE,
                if_none_match=True,
            )
        except PreconditionFailed:
            return self._load()  # another instance created it first
        log_event(
            logger,
            "users_file_created",
            message="created the users file with the configured first user (an admin)",
        )
        self._etag = info.etag
        return table
