"""Login under attack: brute-force throttling per username and per address, no enumeration,
passwords of any length and any characters, RFC 6749 request rules.

Time is a clock the test moves (the runtime's injectable clock), never a sleep.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any
from urllib.parse import quote, urlencode

import bcrypt
import pytest

from functions.passwords import PasswordHasher
from functions.runtime import Runtime, install_runtime
from functions.settings import PasswordHashSettings
from functions.throttle import FAILURES_PREFIX, client_address, client_bucket
from functions.users import User, parse_users_csv, update_users
from storage import ObjectInfo, StorageUnavailable, Store, keys
from tests.functions.conftest import CHEAP_HASH, PASSWORDS, Stack, error_of
from tests.functions.openapi_checks import check_response
from tests.functions.stores import FaultyStore
from tests.stores import DelegatingStore

FORM = "application/x-www-form-urlencoded"


class FakeClock:
    """Wall-clock seconds that move only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def throttled(stack_factory: Callable[..., Stack], clock: FakeClock) -> Callable[..., Stack]:
    """A stack with the given settings whose login throttle runs on `clock`."""

    def build(**env: str) -> Stack:
        stack = stack_factory(**env)
        stack.runtime = install_runtime(Runtime(stack.runtime.settings, clock=clock))
        return stack

    return build


def _login(
    stack: Stack,
    username: str = "alice@example.com",
    password: str = "wrong-password",  # noqa: S107 - a wrong one, on purpose
    remote: str = "198.51.100.7",
    headers: dict[str, str] | None = None,
) -> Any:
    return stack.client("auth").post(
        "/token",
        data=urlencode({"grant_type": "password", "username": username, "password": password}),
        content_type=FORM,
        environ_base={"REMOTE_ADDR": remote},
        headers=headers or {},
    )


def _comparable(response: Any) -> tuple[int, Any, dict[str, str]]:
    headers = {name: value for name, value in response.headers if name != "X-Request-ID"}
    return response.status_code, response.get_json(), headers


def _failures(stack: Stack) -> list[str]:
    return stack.auth_store.list_keys(FAILURES_PREFIX)


# -- per username --------------------------------------------------------------------------


def test_token_throttle_user_past_the_limit_gets_429_with_retry_after(
    throttled: Callable[..., Stack],
) -> None:
    stack = throttled(LOGIN_MAX_FAILURES_PER_USER="3", LOGIN_WINDOW_SECONDS="900")
    for _ in range(3):
        assert _login(stack).status_code == 400

    # Even the right password is not checked any more.
    response = _login(stack, password=PASSWORDS["1"])

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "900"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json() == {
        "error": "temporarily_unavailable",
        "error_description": "too many failed logins; retry later",
    }


def test_token_throttle_answer_is_the_documented_one(throttled: Callable[..., Stack]) -> None:
    stack = throttled(LOGIN_MAX_FAILURES_PER_USER="1")
    _login(stack)
    response = _login(stack)
    assert response.status_code == 429
    check_response("/auth/token", "post", response)


def test_token_throttle_answers_alike_for_existing_and_unknown_usernames(
    throttled: Callable[..., Stack],
) -> None:
    stack = throttled(LOGIN_MAX_FAILURES_PER_USER="2")
    existing = [_comparable(_login(stack, "alice@example.com")) for _ in range(4)]
    unknown = [_comparable(_login(stack, "ghost@example.com")) for _ in range(4)]

    assert existing == unknown
    assert [status for status, _, _ in existing] == [400, 400, 429, 429]


def test_token_throttle_retry_after_counts_down_and_the_lock_lifts(
    throttled: Callable[..., Stack], clock: FakeClock
) -> None:
    stack = throttled(LOGIN_MAX_FAILURES_PER_USER="2", LOGIN_WINDOW_SECONDS="600")
    _login(stack)
    clock.advance(100)
    _login(stack)
    clock.advance(50)

    # Free when the older of the two failures leaves the window: 600 - 150 seconds from now.
    assert _login(stack).headers["Retry-After"] == "450"
    clock.advance(449)
    assert _login(stack, password=PASSWORDS["1"]).status_code == 429
    clock.advance(2)
    assert _login(stack, password=PASSWORDS["1"]).status_code == 200


def test_token_throttle_refused_attempts_do_not_extend_the_lock(
    throttled: Callable[..., Stack], clock: FakeClock
) -> None:
    stack = throttled(LOGIN_MAX_FAILURES_PER_USER="2", LOGIN_WINDOW_SECONDS="300")
    _login(stack)
    _login(stack)
    for _ in range(10):
        clock.advance(20)
        assert _login(stack).status_code == 429
    clock.advance(101)  # 301 s after the failures

    assert _login(stack, password=PASSWORDS["1"]).status_code == 200


def test_token_throttle_success_clears_the_username_failures(
    throttled: Callable[..., Stack],
) -> None:
    stack = throttled(LOGIN_MAX_FAILURES_PER_USER="3")
    _login(stack)
    _login(stack)
    assert len(_failures(stack)) == 2

    assert _login(stack, password=PASSWORDS["1"]).status_code == 200

    assert _failures(stack) == []
    assert [_login(stack).status_code for _ in range(4)] == [400, 400, 400, 429]


def test_token_throttle_is_shared_by_every_instance_through_the_store(
    throttled: Callable[..., Stack], clock: FakeClock
) -> None:
    stack = throttled(LOGIN_MAX_FAILURES_PER_USER="3")
    for _ in range(3):
        _login(stack)
    # Another instance: a fresh process memory on the same store.
    install_runtime(Runtime(stack.runtime.settings, clock=clock))

    assert _login(stack, password=PASSWORDS["1"], remote="192.0.2.99").status_code == 429


def test_token_throttle_failure_records_name_no_user(throttled: Callable[..., Stack]) -> None:
    stack = throttled()
    _login(stack, "alice@example.com")
    _login(stack, "Alice@Example.com ")  # the same account, as the users file matches names
    _login(stack, "x" * 3000 + "/../\0\n;")  # any text makes a safe key

    failures = _failures(stack)
    assert len(failures) == 3
    assert len({key.split("/")[1] for key in failures}) == 2
    assert all("alice" not in key.lower() and ".." not in key for key in failures)


class BarrierStore(FaultyStore):
    """Holds every listing of login failures until `parties` attempts have reached it.

    This forces the worst interleaving: every attempt has counted itself before any of them
    looks at the count.
    """

    def __init__(self, inner: Store, parties: int) -> None:
        super().__init__(inner, fails=lambda op, key: False, error=RuntimeError)
        self.barrier = threading.Barrier(parties, timeout=20)

    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        if prefix.startswith(FAILURES_PREFIX) and not self.barrier.broken:
            self.barrier.wait()
        return super().list(prefix, start_after=start_after, page_size=page_size)


def test_token_throttle_concurrent_attempts_never_pass_the_limit(
    throttled: Callable[..., Stack], clock: FakeClock
) -> None:
    stack = throttled(LOGIN_MAX_FAILURES_PER_USER="3")
    _login(stack)
    _login(stack)  # one attempt left
    attackers = 6
    gate = BarrierStore(stack.auth_store, attackers)
    install_runtime(Runtime(stack.runtime.settings, auth_store=gate, clock=clock))
    statuses: list[int] = []

    def attack(index: int) -> None:
        statuses.append(_login(stack, remote=f"203.0.113.{index}").status_code)

    threads = [threading.Thread(target=attack, args=(index,)) for index in range(attackers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(statuses) == attackers
    assert len([status for status in statuses if status != 429]) <= 1
    gate.barrier.abort()  # later listings pass freely
    # The refused ones withdrew their reservations: the count is what was actually tried.
    assert len(_failures(stack)) == 2 + statuses.count(400)


def test_token_throttle_storage_failure_is_503_and_leaves_no_reservation(
    stack: Stack,
) -> None:
    broken = FaultyStore(
        stack.auth_store,
        fails=lambda op, key: op == "list" and key.startswith(FAILURES_PREFIX),
        error=lambda: StorageUnavailable("list login_failures/: SlowDown"),
    )
    install_runtime(Runtime(stack.runtime.settings, auth_store=broken))

    response = _login(stack, password=PASSWORDS["1"])

    assert response.status_code == 503
    assert response.get_json()["error"] == "temporarily_unavailable"
    assert "login_failures" not in response.get_data(as_text=True)
    assert _failures(stack) == []


# -- per client address --------------------------------------------------------------------


def test_token_throttle_client_past_the_limit_is_429_whatever_the_username(
    throttled: Callable[..., Stack],
) -> None:
    stack = throttled(LOGIN_MAX_FAILURES_PER_CLIENT="3", LOGIN_MAX_FAILURES_PER_USER="100")
    for index in range(3):
        assert _login(stack, f"spray{index}@example.com").status_code == 400

    refused = _login(stack, "alice@example.com", PASSWORDS["1"])
    elsewhere = _login(stack, "alice@example.com", PASSWORDS["1"], remote="192.0.2.1")

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) == 900
    assert elsewhere.status_code == 200


def test_token_throttle_forged_forwarded_for_does_not_escape_without_trusted_proxies(
    throttled: Callable[..., Stack],
) -> None:
    stack = throttled(LOGIN_MAX_FAILURES_PER_CLIENT="2", LOGIN_MAX_FAILURES_PER_USER="100")
    statuses = [
        _login(stack, f"u{index}@example.com", headers={"X-Forwarded-For": f"10.0.0.{index}"})
        for index in range(4)
    ]
    assert [response.status_code for response in statuses] == [400, 400, 429, 429]


def test_token_throttle_trusted_proxy_hop_names_the_client(
    throttled: Callable[..., Stack],
) -> None:
    stack = throttled(
        LOGIN_MAX_FAILURES_PER_CLIENT="2", LOGIN_MAX_FAILURES_PER_USER="100", TRUSTED_PROXY_HOPS="1"
    )

    def from_client(client: str, index: int) -> int:
        # The client forged the first entry; the proxy appended the address it saw.
        forwarded = {"X-Forwarded-For": f"1.2.3.4, {client}"}
        return int(_login(stack, f"v{index}@example.com", headers=forwarded).status_code)

    assert [from_client("203.0.113.5", index) for index in range(3)] == [400, 400, 429]
    assert from_client("203.0.113.6", 9) == 400


@pytest.mark.parametrize(
    ("remote", "forwarded", "hops", "expected"),
    [
        ("10.0.0.1", None, 0, "10.0.0.1"),
        ("10.0.0.1", "1.1.1.1", 0, "10.0.0.1"),
        ("10.0.0.1", "9.9.9.9, 1.1.1.1", 1, "1.1.1.1"),
        ("10.0.0.1", "9.9.9.9, 1.1.1.1, 2.2.2.2", 2, "1.1.1.1"),
        ("10.0.0.1", "1.1.1.1", 3, "1.1.1.1"),
        (None, None, 0, ""),
    ],
)
def test_client_address_uses_only_trusted_hops(
    remote: str | None, forwarded: str | None, hops: int, expected: str
) -> None:
    assert client_address(remote, forwarded, hops) == expected


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("not an address", "other:not an address"),
    ],
)
def test_client_bucket_groups_ipv6_by_64(address: str, bucket: str) -> None:
    assert client_bucket(address) == bucket


# -- no user enumeration -------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["wrong-password", "", "x" * 2000, "é" * 80, "\0", "p" * 73],
)
def test_token_unknown_user_and_wrong_password_answers_are_identical(
    stack_factory: Callable[..., Stack], password: str
) -> None:
    stack = stack_factory(LOGIN_MAX_FAILURES_PER_USER="100")
    existing = _comparable(_login(stack, "alice@example.com", password))
    unknown = _comparable(_login(stack, "nobody-here@example.com", password))
    assert existing == unknown
    assert existing[0] == 400


def _login_seconds(stack: Stack, username: str, password: str) -> float:
    client = stack.client("auth")
    body = urlencode({"grant_type": "password", "username": username, "password": password})
    started = time.perf_counter()
    response = client.post("/token", data=body, content_type=FORM)
    elapsed = time.perf_counter() - started
    assert response.status_code == 400
    return elapsed


def _seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _interleaved(
    paths: dict[str, Callable[[int], object]],
    settled: Callable[[dict[str, list[float]]], bool],
    first: int = 9,
    most: int = 27,
) -> dict[str, list[float]]:
    """Seconds per path, in rounds that run each path once (interleaved, so a busy spell of the
    other test worker or the machine hits every path alike); `first` rounds, then more, up to
    `most`, while `settled` says no.

    Scheduling only ever adds time, so each path's minimum only falls, towards the path's own
    cost, as rounds are added: more rounds cannot hide a real gap (a slow path's minimum never
    drops below its cost, while the fast path's gets ever closer to its own); they only wash
    out a busy spell that hit one path's every run.
    """
    samples: dict[str, list[float]] = {name: [] for name in paths}
    rounds = 0
    while rounds < first or (rounds < most and not settled(samples)):
        for name, path in paths.items():
            samples[name].append(_seconds(partial(path, rounds)))
        rounds += 1
    return samples


def _spread(samples: dict[str, list[float]], statistic: Callable[[list[float]], float]) -> float:
    values = [statistic(seconds) for seconds in samples.values()]
    return max(values) / min(values)


def _alike(samples: dict[str, list[float]]) -> bool:
    return all(_spread(samples, statistic) < 2.0 for statistic in (min, statistics.median))


def _assert_alike(samples: dict[str, list[float]]) -> None:
    """Every population's minimum and median within a factor of 2 of every other's.

    Robust statistics (supabase/auth#2674): the minimum of several runs is the path's own cost;
    the median shows it is not one lucky run.
    """
    for statistic in (min, statistics.median):
        values = {name: statistic(seconds) for name, seconds in samples.items()}
        assert _spread(samples, statistic) < 2.0, (statistic.__name__, values)


def _wrong_password_logins(
    stack: Stack, usernames: dict[str, Callable[[int], str]]
) -> dict[str, list[float]]:
    """Interleaved wrong-password logins per population, after one warm-up each."""
    for name in usernames.values():
        _login_seconds(stack, name(-1), "warm-up")
    paths = {
        population: lambda index, name=name: _login_seconds(stack, name(index), f"wrong-{index}")
        for population, name in usernames.items()
    }
    return _interleaved(paths, settled=_alike)


def _real_cost_stack(stack_factory: Callable[..., Stack]) -> Stack:
    real_cost = PasswordHashSettings()
    return stack_factory(
        LOGIN_MAX_FAILURES_PER_USER="1000",
        LOGIN_MAX_FAILURES_PER_CLIENT="1000",
        PASSWORD_HASH_MEMORY_KIB=str(real_cost.memory_kib),
        PASSWORD_HASH_TIME_COST=str(real_cost.time_cost),
    )


def test_token_timing_does_not_reveal_whether_the_user_exists(
    stack_factory: Callable[..., Stack],
) -> None:
    # A real argon2 cost (about 25 ms here) makes the hash dominate; without the dummy check
    # the unknown path costs under a tenth of it.
    stack = _real_cost_stack(stack_factory)
    hashed = PasswordHasher(PasswordHashSettings()).hash("the-right-password")
    update_users(
        stack.auth_store, lambda table: table.added(User("8", "real@example.com", "user", hashed))
    )
    timings = _wrong_password_logins(
        stack,
        {
            "argon2id user": lambda _: "real@example.com",
            "unknown user": lambda index: f"nobody{index}@example.com",
        },
    )
    assert min(timings["argon2id user"]) > 0.005, "the hash is too cheap to mean anything"
    _assert_alike(timings)


# bcrypt cost 11 (about 120 ms here) against argon2id's about 20 ms: cheaper than the original
# system's cost 12, yet far enough from argon2id that a check following either scheme alone
# would put some population outside the factor of 2. Not cost 10: argon2id is memory-hard and
# slows when another process fills the caches (training in the other test worker), bcrypt does
# not, so cost 10's ratio, 3.0 on a quiet machine, fell to 2.4 beside a memory-bound load and
# once to 1.99 in a full test run, under the premise's 2.0; cost 11 keeps 6.1 and 4.4.
_TEST_LEGACY_ROUNDS = 11


def test_token_timing_does_not_reveal_which_carried_over_accounts_exist(
    stack_factory: Callable[..., Stack],
) -> None:
    # A users file carried over from the original system keeps its bcrypt hashes beside new
    # argon2id ones (and the seeded users' cheap argon2id): a legacy user, a new user and an
    # unknown name must all cost the same, or timing tells which carried-over accounts exist.
    stack = _real_cost_stack(stack_factory)
    real = PasswordHasher(PasswordHashSettings())
    legacy = bcrypt.hashpw(b"the-old-password", bcrypt.gensalt(_TEST_LEGACY_ROUNDS)).decode()
    modern = real.hash("the-new-password")
    update_users(
        stack.auth_store,
        lambda table: table.added(User("8", "carried@example.com", "user", legacy)).added(
            User("9", "new@example.com", "user", modern)
        ),
    )

    # The comparison is real: alone, a legacy verification costs over twice a modern one, so a
    # dummy check of either scheme alone (or none) would fail the bounds below.
    alone = _interleaved(
        {
            "legacy": lambda _: real.verify("wrong", legacy),
            "modern": lambda _: real.verify("wrong", modern),
        },
        settled=lambda samples: min(samples["legacy"]) > 2.0 * min(samples["modern"]),
    )
    assert min(alone["legacy"]) > 2.0 * min(alone["modern"]), alone

    timings = _wrong_password_logins(
        stack,
        {
            "legacy bcrypt user": lambda _: "carried@example.com",
            "argon2id user": lambda _: "new@example.com",
            "unknown user": lambda index: f"nobody{index}@example.com",
        },
    )
    _assert_alike(timings)


# -- legacy hashes upgraded on login -------------------------------------------------------

_OLD_PASSWORD = "the-old-password"


class _Events(logging.Handler):
    """Collects the structured events of the `functions` loggers (they do not propagate)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def named(self, event: str) -> list[logging.LogRecord]:
        return [record for record in self.records if getattr(record, "event", None) == event]

    def text(self) -> str:
        return "\n".join(
            f"{record.getMessage()} {getattr(record, 'event_fields', '')}"
            for record in self.records
        )


@pytest.fixture
def events() -> Iterator[_Events]:
    handler = _Events()
    target = logging.getLogger("functions")
    target.addHandler(handler)
    yield handler
    target.removeHandler(handler)


def _add_legacy_user(stack: Stack, disabled: bool = False) -> str:
    legacy = bcrypt.hashpw(_OLD_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    update_users(
        stack.auth_store,
        lambda table: table.added(User("9", "legacy@example.com", "user", legacy, disabled)),
    )
    return legacy


def _stored(stack: Stack) -> Any:
    return parse_users_csv(stack.auth_store.get_bytes(keys.USERS_FILE))


def _with_auth_store(stack: Stack, auth_store: Store) -> None:
    stack.runtime = install_runtime(
        Runtime(stack.runtime.settings, root_store=stack.root, auth_store=auth_store)
    )


class _UsersWrites(DelegatingStore):
    """Records every write of the users file; `competitor` (once) runs on the inner store just
    before the first one, i.e. between the rehash's read and its conditional write."""

    def __init__(self, inner: Store, competitor: Callable[[Store], object] | None = None) -> None:
        super().__init__(inner)
        self._competitor = competitor
        self.writes: list[dict[str, Any]] = []

    def put(self, key: str, data: bytes, **options: Any) -> ObjectInfo:
        if key == keys.USERS_FILE:
            self.writes.append(options)
            if self._competitor is not None:
                competitor, self._competitor = self._competitor, None
                competitor(self.inner)
        return super().put(key, data, **options)


def test_token_legacy_hash_becomes_argon2id_on_successful_login(
    any_stack: Stack, events: _Events
) -> None:
    stack = any_stack
    legacy = _add_legacy_user(stack)
    writes = _UsersWrites(stack.auth_store)
    _with_auth_store(stack, writes)

    assert _login(stack, "legacy@example.com", _OLD_PASSWORD).status_code == 200

    upgraded = _stored(stack).by_id("9").hashed_password
    assert upgraded.startswith("$argon2id$v=19$m=8,t=1,p=1$")  # the configured parameters
    assert not stack.runtime.hasher.needs_update(upgraded)
    (write,) = writes.writes
    assert write["if_match"]  # a conditional write, never a blind one
    (event,) = events.named("password_rehashed")
    assert event.event_fields == {"user_id": "9", "previous": "bcrypt cost 4"}  # type: ignore[attr-defined]
    for secret in (_OLD_PASSWORD, legacy, upgraded):
        assert secret not in events.text()
    # The old password keeps working (now against argon2id), a wrong one does not, and
    # nothing is rewritten again; the other users are untouched.
    assert _login(stack, "legacy@example.com", _OLD_PASSWORD).status_code == 200
    assert _login(stack, "legacy@example.com", _OLD_PASSWORD + "x").status_code == 400
    assert len(writes.writes) == 1
    assert _stored(stack).by_id("9").hashed_password == upgraded
    assert {user.id: user for user in _stored(stack).users if user.id != "9"} == stack.users


def test_token_rehash_gives_way_to_a_concurrent_change_of_the_users_file(
    stack: Stack, events: _Events
) -> None:
    legacy = _add_legacy_user(stack)
    newcomer = User("10", "newcomer@example.com", "user", PasswordHasher(CHEAP_HASH).hash("pw"))
    writes = _UsersWrites(
        stack.auth_store,
        competitor=lambda inner: update_users(
            inner, lambda table: table.added(newcomer).updated("3", role="admin")
        ),
    )
    _with_auth_store(stack, writes)

    assert _login(stack, "legacy@example.com", _OLD_PASSWORD).status_code == 200

    stored = _stored(stack)
    assert stored.by_id("10") == newcomer  # the concurrent change is kept...
    assert stored.by_id("3").role == "admin"
    assert stored.by_id("9").hashed_password == legacy  # ...and the rehash dropped
    (skipped,) = events.named("password_rehash_skipped")
    assert skipped.event_fields["reason"] == "file_changed"  # type: ignore[attr-defined]
    assert skipped.levelno == logging.INFO  # not an error
    # The next login upgrades it, on top of the change.
    assert _login(stack, "legacy@example.com", _OLD_PASSWORD).status_code == 200
    stored = _stored(stack)
    assert stored.by_id("9").hashed_password.startswith("$argon2id$")
    assert stored.by_id("10") == newcomer
    assert stored.by_id("3").role == "admin"


@pytest.mark.parametrize(
    "password", ["wrong-password", _OLD_PASSWORD + "x", _OLD_PASSWORD[:-1], "p" * 100, "é" * 40]
)
def test_token_wrong_password_never_rewrites_anything(
    stack: Stack, events: _Events, password: str
) -> None:
    _add_legacy_user(stack)
    before = stack.auth_store.get(keys.USERS_FILE)
    writes = _UsersWrites(stack.auth_store)
    _with_auth_store(stack, writes)

    assert _login(stack, "legacy@example.com", password).status_code == 400

    assert writes.writes == []
    after = stack.auth_store.get(keys.USERS_FILE)
    assert (after.data, after.etag) == (before.data, before.etag)
    assert not events.named("password_rehashed")
    assert not events.named("password_rehash_skipped")


def test_token_disabled_legacy_user_is_not_rehashed(stack: Stack) -> None:
    legacy = _add_legacy_user(stack, disabled=True)
    writes = _UsersWrites(stack.auth_store)
    _with_auth_store(stack, writes)
    assert _login(stack, "legacy@example.com", _OLD_PASSWORD).status_code == 400
    assert writes.writes == []
    assert _stored(stack).by_id("9").hashed_password == legacy


def test_token_rehash_that_cannot_be_written_does_not_fail_the_login(
    stack: Stack, events: _Events
) -> None:
    legacy = _add_legacy_user(stack)
    _with_auth_store(
        stack,
        FaultyStore(
            stack.auth_store,
            fails=lambda operation, key: operation == "put" and key == keys.USERS_FILE,
            error=lambda: StorageUnavailable("put input/db_auth/authentication.csv: SlowDown"),
        ),
    )

    assert _login(stack, "legacy@example.com", _OLD_PASSWORD).status_code == 200

    assert _stored(stack).by_id("9").hashed_password == legacy
    (skipped,) = events.named("password_rehash_skipped")
    assert skipped.event_fields["reason"] == "storage_error"  # type: ignore[attr-defined]
    assert skipped.levelno == logging.WARNING


# -- passwords of any length and any characters --------------------------------------------

_ODD_PASSWORDS = [
    "a",
    "p" * 72,
    "p" * 73,
    "é" * 36,  # 72 bytes
    "é" * 37,  # 74 bytes
    "é" * 200,
    "🔒" * 256,  # 1024 bytes, the most accepted
    "pass\0word",
    "\t\r\n ",
    "' OR '1'='1",
    "=cmd|' /C calc'!A0",
    "\u202eevil",
    "x" * 1024,
]


@pytest.mark.parametrize("password", _ODD_PASSWORDS, ids=range(len(_ODD_PASSWORDS)))
def test_token_password_of_any_length_and_characters_logs_in_when_right(
    stack: Stack, password: str
) -> None:
    hashed = PasswordHasher(CHEAP_HASH).hash(password)
    update_users(
        stack.auth_store, lambda table: table.added(User("8", "odd@example.com", "user", hashed))
    )
    assert _login(stack, "odd@example.com", password).status_code == 200
    assert _login(stack, "odd@example.com", password + "x").status_code == 400


_HOSTILE_BODIES = [
    "grant_type=password&username=alice@example.com&password=" + "x" * 1025,
    "grant_type=password&username=alice@example.com&password=" + "x" * 60_000,
    "grant_type=password&username=alice@example.com&password=%FF%FE%00",
    "grant_type=password&username=alice@example.com&password=%ED%A0%80",  # lone surrogate
    "grant_type=password&username=alice@example.com&password=%C0%80",  # overlong NUL
    "grant_type=password&username=alice@example.com&password=%",
    "grant_type=password&username=alice@example.com&password=%zz",
    "grant_type=password&username=%00&password=x",
    "grant_type=password&username=" + quote("é" * 300) + "&password=x",
    "grant_type=password&username=legacy@example.com&password=" + "y" * 100,
    "grant_type=password&username=legacy@example.com&password=" + quote("é" * 40),
    "grant_type=password&username=legacy@example.com&password=a%00b",
]


@pytest.mark.parametrize("body", _HOSTILE_BODIES, ids=range(len(_HOSTILE_BODIES)))
def test_token_hostile_passwords_never_cause_a_server_error(stack: Stack, body: str) -> None:
    legacy = bcrypt.hashpw(b"legacy-password", bcrypt.gensalt(rounds=4)).decode()
    update_users(
        stack.auth_store,
        lambda table: table.added(User("9", "legacy@example.com", "user", legacy)),
    )
    response = stack.client("auth").post("/token", data=body, content_type=FORM)
    assert response.status_code == 400
    assert error_of(response) == "invalid_grant"


def test_token_bcrypt_password_is_never_truncated(stack: Stack) -> None:
    # bcrypt reads 72 bytes at most; libraries used to cut longer passwords silently, so the
    # first 72 bytes plus anything logged in.
    password = "b" * 72
    legacy = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    update_users(
        stack.auth_store,
        lambda table: table.added(User("9", "legacy@example.com", "user", legacy)),
    )
    assert _login(stack, "legacy@example.com", password).status_code == 200
    assert _login(stack, "legacy@example.com", password + "extra").status_code == 400


# -- RFC 6749 request rules ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("", FORM),
        ("grant_type=password&username=a@example.com&password=x&password=", FORM),
        ("grant_type=password&grant_type=&username=a@example.com&password=x", FORM),
        ("grant_type=password&username=a@example.com&password=x&scope=a&scope=b", FORM),
        ("grant_type=password&username=&password=", FORM),
        ("grant_type=password&username=alice@example.com&password=x", "text/plain"),
        ("grant_type=password&username=alice@example.com&password=x", None),
        ('{"grant_type":"password","username":"a@example.com","password":"x"}', "application/json"),
        ("--b\r\nContent-Disposition: form-data; name=grant_type\r\n\r\npassword\r\n--b--\r\n",
         "multipart/form-data; boundary=b"),
    ],
)  # fmt: skip
def test_token_malformed_requests_are_invalid_request(
    stack: Stack, body: str, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = stack.client("auth").post("/token", data=body, headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert set(response.get_json()) <= {"error", "error_description"}


@pytest.mark.parametrize(
    "query", ["?password=x", "?username=alice@example.com", "?password=&username="]
)
def test_token_credentials_in_the_query_are_refused_even_if_empty(stack: Stack, query: str) -> None:
    response = stack.client("auth").post(
        "/token" + query,
        data=urlencode(
            {"grant_type": "password", "username": "alice@example.com", "password": PASSWORDS["1"]}
        ),
        content_type=FORM,
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
