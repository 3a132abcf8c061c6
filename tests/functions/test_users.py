"""The users file: the original format, safe writing, compare-and-swap updates, cache and CLI."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from functions.passwords import PasswordHasher
from functions.users import (
    SeedUser,
    User,
    UserDirectory,
    UsersFileError,
    UserTable,
    check_new_email,
    format_users_csv,
    parse_users_csv,
    update_users,
)
from functions.users.cli import main as users_cli
from storage import (
    LocalStore,
    ObjectInfo,
    StorageSettings,
    StorageUnavailable,
    Store,
    StoredObject,
    keys,
    open_areas,
)
from tests.conftest import new_bucket
from tests.functions.conftest import CHEAP_HASH, cheap_env
from tests.stores import DelegatingStore

ORIGINAL_FILE = (
    b"id;email;role;hashed_password;disabled\n"
    b"1;admin@example.com;admin;$2b$12$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXY;False\n"
    b"2;user@example.com;user;$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA;True\n"
)


class InterleavingStore(DelegatingStore):
    """Wraps a store; just before the first write of the users file, runs `competitor` once.

    This forces the interleaving "we read, someone else writes, we write" in a fixed order,
    which thread races on moto cannot do reliably (reliability.md §3.4).
    """

    def __init__(self, inner: Store, competitor: Callable[[Store], object]) -> None:
        super().__init__(inner)
        self._competitor: Callable[[Store], object] | None = competitor
        self.conflicts_seen = 0

    def put(self, key: str, data: bytes, **options: Any) -> ObjectInfo:
        if key == keys.USERS_FILE and self._competitor is not None:
            competitor, self._competitor = self._competitor, None
            competitor(self.inner)
        try:
            return super().put(key, data, **options)
        except Exception:
            self.conflicts_seen += 1
            raise


def _user(user_id: str, email: str, role: str = "user") -> User:
    return User(user_id, email, role, "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA")


def test_users_csv_original_file_parses() -> None:
    table = parse_users_csv(ORIGINAL_FILE)
    assert [user.id for user in table.users] == ["1", "2"]
    admin = table.by_email("ADMIN@example.com")
    assert admin is not None
    assert admin.role == "admin"
    assert not admin.disabled
    assert table.by_id("2") is not None
    assert table.by_id("2").disabled
    assert table.problems == ()


def test_users_csv_round_trips_through_format() -> None:
    table = parse_users_csv(ORIGINAL_FILE)
    again = parse_users_csv(format_users_csv(table.users))
    assert again.users == table.users


def test_users_csv_malformed_rows_are_skipped_and_reported() -> None:
    data = (
        ORIGINAL_FILE
        + b"3;x@example.com;root;hash;False\n../4;evil@example.com;user;hash;False\nshort;row\n"
    )
    table = parse_users_csv(data)
    assert [user.id for user in table.users] == ["1", "2"]
    assert len(table.problems) == 3
    assert all("evil" not in problem for problem in table.problems)


def test_users_csv_wrong_header_is_refused() -> None:
    with pytest.raises(UsersFileError):
        parse_users_csv(b"name;password\nalice;x\n")


@pytest.mark.parametrize(
    "email",
    ["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(A1)", "a;b@example.com", 'a"b@x.org', "a\nb", ""],
)
def test_users_email_that_could_forge_rows_or_formulas_is_refused(email: str) -> None:
    with pytest.raises(ValueError):
        check_new_email(email)


@pytest.mark.parametrize("email", ["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(A1)", "a\nb", ""])
def test_users_writer_refuses_formula_or_line_break_fields(email: str) -> None:
    with pytest.raises(UsersFileError):
        format_users_csv([User("9", email, "user", "$argon2id$x")])


@pytest.mark.parametrize("email", ["a;b@example.com", 'a"b@x.org', "a,b@x.org"])
def test_users_writer_quotes_separators_so_no_row_is_forged(email: str) -> None:
    table = parse_users_csv(format_users_csv([User("9", email, "user", "$argon2id$x")]))
    assert [user.email for user in table.users] == [email]
    assert table.problems == ()


def test_users_csv_quotes_fields_per_rfc4180() -> None:
    # A legacy hash with a separator inside stays one field after a round trip.
    user = User("1", "a@example.com", "user", '$weird;hash"value')
    assert parse_users_csv(format_users_csv([user])).users == (user,)


def test_update_users_two_interleaved_changes_both_survive(store: Store) -> None:
    store.put(keys.USERS_FILE, format_users_csv([_user("1", "first@example.com")]))
    competitor = lambda inner: update_users(  # noqa: E731
        inner, lambda table: table.added(_user("2", "competitor@example.com"))
    )
    wrapped = InterleavingStore(store, competitor)
    sleeps: list[float] = []

    final = update_users(
        wrapped,
        lambda table: table.added(_user(table.next_id(), "mine@example.com")),
        sleep=sleeps.append,
    )

    assert wrapped.conflicts_seen == 1  # our first write lost, and was redone
    assert len(sleeps) == 1
    stored = parse_users_csv(store.get_bytes(keys.USERS_FILE))
    assert {user.email for user in stored.users} == {
        "first@example.com",
        "competitor@example.com",
        "mine@example.com",
    }
    assert stored.users == final.users
    assert stored.by_email("mine@example.com").id == "3"  # type: ignore[union-attr]


def test_update_users_concurrent_creation_of_the_file_keeps_both(store: Store) -> None:
    competitor = lambda inner: update_users(  # noqa: E731
        inner, lambda table: table.added(_user("1", "competitor@example.com"))
    )
    wrapped = InterleavingStore(store, competitor)
    update_users(
        wrapped,
        lambda table: table.added(_user(table.next_id(), "mine@example.com")),
        sleep=lambda _: None,
    )
    stored = parse_users_csv(store.get_bytes(keys.USERS_FILE))
    assert [user.email for user in stored.users] == ["competitor@example.com", "mine@example.com"]


def test_update_users_refuses_to_rewrite_a_file_with_malformed_rows(
    local_store: LocalStore,
) -> None:
    local_store.put(keys.USERS_FILE, ORIGINAL_FILE + b"9;bad;nobody;x;False\n")
    with pytest.raises(UsersFileError):
        update_users(local_store, lambda table: table.updated("1", disabled=True))
    assert local_store.get_bytes(keys.USERS_FILE).endswith(b"9;bad;nobody;x;False\n")


def test_directory_sees_a_change_once_the_cache_expires(local_store: LocalStore) -> None:
    local_store.put(keys.USERS_FILE, format_users_csv([_user("1", "a@example.com")]))
    now = [0.0]
    directory = UserDirectory(local_store, cache_seconds=5, clock=lambda: now[0])
    assert not directory.get("1").disabled  # type: ignore[union-attr]
    update_users(local_store, lambda table: table.updated("1", disabled=True))
    now[0] = 4.0
    assert not directory.get("1").disabled  # type: ignore[union-attr]
    now[0] = 6.0
    assert directory.get("1").disabled  # type: ignore[union-attr]


def test_directory_seeds_the_first_user_only_when_no_file_exists(local_store: LocalStore) -> None:
    hasher = PasswordHasher(CHEAP_HASH)
    directory = UserDirectory(
        local_store, cache_seconds=0, seed=SeedUser("root@example.com", "pw-1"), hasher=hasher
    )
    seeded = directory.find_by_email("root@example.com")
    assert seeded is not None
    assert seeded.role == "admin"
    assert hasher.verify("pw-1", seeded.hashed_password)
    update_users(local_store, lambda table: table.updated("1", disabled=True))
    assert directory.find_by_email("root@example.com").disabled  # type: ignore[union-attr]


def test_directory_without_file_or_seed_knows_nobody(local_store: LocalStore) -> None:
    assert UserDirectory(local_store, cache_seconds=0).table() == UserTable()


class _OutageStore(DelegatingStore):
    """Delegates to `inner`, counting reads of the users file; fails them while `down`, and
    holds them at `gate` (when set) after saying so through `entered`."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.down = False
        self.reads = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def _read(self) -> None:
        self.reads += 1
        if self.gate is not None:
            self.entered.set()
            self.gate.wait()
        if self.down:
            raise StorageUnavailable("get input/db_auth/authentication.csv: SlowDown")

    def get(self, key: str) -> StoredObject:
        self._read()
        return super().get(key)

    def head(self, key: str) -> ObjectInfo:
        self._read()
        return super().head(key)


def test_directory_storage_outage_answers_from_cache_for_the_stale_period_then_fails(
    local_store: LocalStore,
) -> None:
    local_store.put(keys.USERS_FILE, format_users_csv([_user("1", "a@example.com")]))
    outage = _OutageStore(local_store)
    now = [0.0]
    directory = UserDirectory(outage, cache_seconds=5, stale_seconds=60, clock=lambda: now[0])
    assert directory.get("1") is not None
    outage.down, outage.reads = True, 0

    now[0] = 6.0  # the cache expired: the recheck fails, the cached table answers
    assert directory.get("1") is not None
    now[0] = 7.0  # the failed check counts as a check: no new read for cache_seconds
    assert directory.get("1") is not None
    assert outage.reads == 1
    now[0] = 12.0
    assert directory.get("1") is not None
    assert outage.reads == 2
    now[0] = 65.0  # cache_seconds + stale_seconds after the last good check
    with pytest.raises(StorageUnavailable):
        directory.get("1")

    outage.down = False
    assert directory.get("1") is not None


def test_directory_storage_outage_without_cached_table_fails(local_store: LocalStore) -> None:
    local_store.put(keys.USERS_FILE, format_users_csv([_user("1", "a@example.com")]))
    outage = _OutageStore(local_store)
    outage.down = True
    with pytest.raises(StorageUnavailable):
        UserDirectory(outage, cache_seconds=5, stale_seconds=60).table()


def test_directory_one_request_revalidates_while_the_others_answer_from_cache(
    local_store: LocalStore,
) -> None:
    local_store.put(keys.USERS_FILE, format_users_csv([_user("1", "a@example.com")]))
    outage = _OutageStore(local_store)
    now = [0.0]
    directory = UserDirectory(outage, cache_seconds=5, stale_seconds=60, clock=lambda: now[0])
    directory.table()
    now[0] = 6.0
    outage.gate, outage.reads = threading.Event(), 0
    answers: list[UserTable] = []
    revalidating = threading.Thread(target=lambda: answers.append(directory.table()))
    revalidating.start()
    assert outage.entered.wait(10)  # the first request is now stuck reading the users file
    try:
        other = threading.Thread(target=lambda: answers.append(directory.table()))
        other.start()
        other.join(10)
        finished_while_stuck = not other.is_alive()
        reads_while_stuck = outage.reads
    finally:
        outage.gate.set()
        revalidating.join(10)
    assert finished_while_stuck  # it did not wait for the stuck revalidation
    assert reads_while_stuck == 1  # and did not start a second one
    assert [len(table.users) for table in answers] == [1, 1]


# -- the one write of the login path: a password hash upgraded ---------------------------------

_LEGACY = "$2b$04$" + "a" * 22 + "b" * 31
_NEW = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


def _legacy_file(store: Store) -> None:
    store.put(
        keys.USERS_FILE,
        format_users_csv(
            [User("1", "old@example.com", "user", _LEGACY), _user("2", "other@example.com")]
        ),
    )


def test_directory_replace_password_hash_writes_only_that_hash(store: Store) -> None:
    _legacy_file(store)
    before = parse_users_csv(store.get_bytes(keys.USERS_FILE))

    assert UserDirectory(store).replace_password_hash("1", _LEGACY, _NEW) is None

    after = parse_users_csv(store.get_bytes(keys.USERS_FILE))
    assert after.by_id("1") == User("1", "old@example.com", "user", _NEW)
    assert after.by_id("2") == before.by_id("2")
    assert len(after.users) == 2


def test_directory_replace_password_hash_loses_to_a_change_between_read_and_write(
    store: Store,
) -> None:
    _legacy_file(store)
    competitor = lambda inner: update_users(  # noqa: E731
        inner, lambda table: table.added(_user("3", "competitor@example.com"))
    )
    wrapped = InterleavingStore(store, competitor)

    assert UserDirectory(wrapped).replace_password_hash("1", _LEGACY, _NEW) == "file_changed"

    assert wrapped.conflicts_seen == 1  # one conditional write, refused, and no retry
    stored = parse_users_csv(store.get_bytes(keys.USERS_FILE))
    assert stored.by_email("competitor@example.com") is not None  # the change is kept
    assert stored.by_id("1").hashed_password == _LEGACY  # type: ignore[union-attr]


def test_directory_replace_password_hash_never_overwrites_a_password_set_meanwhile(
    local_store: LocalStore,
) -> None:
    _legacy_file(local_store)
    update_users(local_store, lambda table: table.updated("1", hashed_password="$argon2id$set"))
    data = local_store.get_bytes(keys.USERS_FILE)

    reason = UserDirectory(local_store).replace_password_hash("1", _LEGACY, _NEW)

    assert reason == "row_changed"
    assert local_store.get_bytes(keys.USERS_FILE) == data


def test_directory_replace_password_hash_keeps_a_file_with_malformed_rows(
    local_store: LocalStore,
) -> None:
    _legacy_file(local_store)
    damaged = local_store.get_bytes(keys.USERS_FILE) + b"9;bad;nobody;x;False\r\n"
    local_store.put(keys.USERS_FILE, damaged)

    reason = UserDirectory(local_store).replace_password_hash("1", _LEGACY, _NEW)

    assert reason == "malformed_rows"
    assert local_store.get_bytes(keys.USERS_FILE) == damaged


def test_directory_replace_password_hash_never_raises_for_storage_trouble(
    local_store: LocalStore,
) -> None:
    assert UserDirectory(local_store).replace_password_hash("1", _LEGACY, _NEW) == "file_missing"
    _legacy_file(local_store)
    down = _OutageStore(local_store)
    down.down = True
    assert UserDirectory(down).replace_password_hash("1", _LEGACY, _NEW) == "storage_error"
    assert b"$argon2id$" not in local_store.get_bytes(keys.USERS_FILE).split(b"\r\n")[1]


# -- the CLI -----------------------------------------------------------------------------------


def _cli(env: dict[str, str], *argv: str, stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = users_cli(list(argv), environ=env, stdin=io.StringIO(stdin), stdout=out)
    return code, out.getvalue()


@pytest.fixture(params=["local", "s3"])
def cli_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = cheap_env()
    if request.param == "local":
        env["STORAGE_URL"] = str(tmp_path / "store")
    else:
        s3 = request.getfixturevalue("s3_env")
        env.update(
            STORAGE_URL=f"s3://{new_bucket(s3['S3_ENDPOINT_URL'])}",
            S3_ENDPOINT_URL=s3["S3_ENDPOINT_URL"],
            AWS_REGION="us-east-1",
        )
    return env


def test_users_cli_add_list_disable_enable_set_password(cli_env: dict[str, str]) -> None:
    assert _cli(cli_env, "add", "Alice@example.com", "--password-stdin", stdin="pw-alice\n")[0] == 0
    assert (
        _cli(
            cli_env,
            "add",
            "root@example.com",
            "--role",
            "admin",
            "--password-stdin",
            stdin="pw-root\n",
        )[0]
        == 0
    )
    assert _cli(cli_env, "add", "alice@example.com", "--password-stdin", stdin="again\n")[0] == 1

    code, listing = _cli(cli_env, "list", "--json")
    assert code == 0
    users = json.loads(listing)
    assert [(u["id"], u["email"], u["role"], u["disabled"]) for u in users] == [
        ("1", "Alice@example.com", "user", False),
        ("2", "root@example.com", "admin", False),
    ]
    assert "argon2" not in listing  # never the hashes

    assert _cli(cli_env, "disable", "alice@example.com")[0] == 0
    assert json.loads(_cli(cli_env, "list", "--json")[1])[0]["disabled"] is True
    assert _cli(cli_env, "enable", "1")[0] == 0
    assert _cli(cli_env, "set-role", "1", "admin")[0] == 0
    assert _cli(cli_env, "set-password", "1", "--password-stdin", stdin="new-pw\n")[0] == 0
    assert _cli(cli_env, "disable", "nobody@example.com")[0] == 1

    table = parse_users_csv(
        open_areas(StorageSettings.from_env(cli_env)).auth.get_bytes(keys.USERS_FILE)
    )
    alice = table.by_id("1")
    assert alice is not None
    assert alice.role == "admin"
    assert not alice.disabled
    assert PasswordHasher(CHEAP_HASH).verify("new-pw", alice.hashed_password)


def test_users_cli_hash_prints_an_argon2id_hash(cli_env: dict[str, str]) -> None:
    code, output = _cli(cli_env, "hash", "--password-stdin", stdin="secret-pw\n")
    assert code == 0
    hashed = output.strip()
    assert hashed.startswith("$argon2id$")
    assert PasswordHasher(CHEAP_HASH).verify("secret-pw", hashed)


def test_users_cli_refuses_a_dangerous_username(cli_env: dict[str, str]) -> None:
    code, _ = _cli(cli_env, "add", '=HYPERLINK("x")', "--password-stdin", stdin="pw\n")
    assert code == 1
