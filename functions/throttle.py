"""Login brute-force throttling (RFC 6749 §4.3.2, ASVS 6.3.1): per username and per client address.

Designed for a fleet of stateless instances:

- **Per username, in the store.** Every failed login is one small create-only object under the
  submitted username's prefix in the auth area (`login_failures/<keyed digest>/<newest-first
  time>-<random>`), so every instance sees every failure and nothing is read-modified-written
  (DESIGN decision 5: no contention, no lost counts, also on S3-compatible stores whose
  conditional writes are not atomic). An attempt *reserves* its slot before the password is
  checked (write, then list): the last of any number of concurrent attempts sees all the
  earlier ones, so at most the limit get through a window however many instances race (ASVS
  15.4.2, check-then-act made safe). A refused attempt removes its reservation, so hammering a
  throttled account does not extend the lock; a successful login clears the account's failures.
  Counters are keyed by the *submitted* name, whether or not such a user exists: the 429 says
  nothing about accounts. The digest is an HMAC keyed from SECRET_KEY, so the store holds no
  usernames in clear and names of any length or characters make safe keys.
- **Per client address, in process memory.** A per-address counter would cost a store write for
  every request of a botnet while protecting little (addresses are cheap to rotate); in memory it
  is free and still stops a single noisy client per instance. Fleet-wide address limits belong at
  the edge (Cloud Armor, an API gateway or the ingress' rate limiting): see SECURITY.md.

The client address is the connection's, or with `TRUSTED_PROXY_HOPS=n` the address the n-th
proxy from the right of `X-Forwarded-For` saw (a client can forge the rest of the header).
IPv6 clients are counted per /64, the block one subscriber usually gets.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from common.logs import log_event
from functions import metrics
from functions.errors import OAuthError
from functions.settings import LoginThrottleSettings
from storage import StorageError, Store, keys

__all__ = [
    "FAILURES_PREFIX",
    "ClientThrottle",
    "LoginAttempt",
    "LoginThrottle",
    "LoginThrottled",
    "UserThrottle",
    "client_address",
    "client_bucket",
]

logger = logging.getLogger(__name__)

# In the auth area, beside the users file (storage/keys.py spells the keys).
FAILURES_PREFIX = keys.LOGIN_FAILURES_AREA
# Addresses tracked per instance; beyond it the stalest are forgotten (memory stays bounded).
_MAX_CLIENTS = 10_000
# A successful login clears at most this many failure objects (the rest expire by lifecycle).
_MAX_CLEARED = 1000


class LoginThrottled(OAuthError):
    """429 in RFC 6749's shape with Retry-After; the same for every username."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "temporarily_unavailable",
            "too many failed logins; retry later",
            status=429,
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


def client_address(remote_addr: str | None, forwarded_for: str | None, trusted_hops: int) -> str:
    """The caller's address: the connection's, or the one the `trusted_hops`-th proxy saw."""
    candidate = remote_addr or ""
    if trusted_hops > 0 and forwarded_for:
        entries = [entry.strip() for entry in forwarded_for.split(",") if entry.strip()]
        if entries:
            candidate = entries[-trusted_hops] if len(entries) >= trusted_hops else entries[0]
    return candidate


def client_bucket(address: str) -> str:
    """What the per-client counter is keyed by: the IPv4 address, an IPv6 /64, or the text."""
    try:
        parsed = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return "other:" + address[:64]
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


# -- per username, in the store ----------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    key: str
    at: float  # seconds since the epoch


class UserThrottle:
    """Failed logins per username as one object each, shared by every instance."""

    def __init__(
        self,
        store: Store,
        secret_key: str,
        *,
        max_failures: int,
        window_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        # One key, one purpose: a digest key of its own, derived from the secret.
        self._digest_key = hmac.new(
            secret_key.encode("utf-8"), b"login-throttle/v1", hashlib.sha256
        ).digest()
        self._max_failures = max_failures
        self._window = window_seconds
        self._clock = clock

    def _digest(self, username: str) -> str:
        """The name's digest in the keys (normalised as the users file matches names)."""
        normalised = username.strip().casefold().encode("utf-8", "surrogatepass")
        return hmac.new(self._digest_key, normalised, hashlib.sha256).hexdigest()

    def _recent(self, prefix: str, now: float, limit: int) -> list[_Failure]:
        """Up to `limit` failures inside the window, newest first (one listing call)."""
        found: list[_Failure] = []
        for info in self._store.list(prefix, page_size=min(1000, limit)):
            at = keys.login_failure_time(info.key)
            if at is None:
                continue
            if at <= now - self._window:
                break  # newest first: everything after this is older still
            found.append(_Failure(info.key, at))
            if len(found) >= limit:
                break
        return found

    def reserve(self, username: str) -> str:
        """Count this attempt before its password is checked; LoginThrottled if over the limit.

        Returns the reservation's key: `release` it when the attempt succeeds or is abandoned;
        leave it when the attempt fails (it is then the failure's record).
        """
        digest = self._digest(username)
        prefix = keys.login_failures_prefix(digest)
        now = self._clock()
        key = keys.login_failure(digest, now, secrets.token_hex(8))
        self._store.put(key, json.dumps({"at": now}).encode(), if_none_match=True)
        try:
            failures = self._recent(prefix, now, self._max_failures + 2)
        except StorageError:
            self._forget(key)
            raise
        others = [failure for failure in failures if failure.key != key]
        if len(others) >= self._max_failures:
            self._forget(key)
            # Free once the max-th newest earlier failure leaves the window.
            oldest_counted = others[self._max_failures - 1]
            raise LoginThrottled(_retry_after(oldest_counted.at + self._window - now))
        return key

    def release(self, key: str) -> None:
        """Withdraw one reservation (the attempt did not fail)."""
        self._forget(key)

    def clear(self, username: str) -> None:
        """Forget the username's failures (after a successful login)."""
        prefix = keys.login_failures_prefix(self._digest(username))
        try:
            for count, info in enumerate(self._store.list(prefix)):
                if count >= _MAX_CLEARED:
                    break
                self._store.delete(info.key)
        except StorageError as exc:
            log_event(
                logger,
                "login_failures_not_cleared",
                logging.WARNING,
                "cannot clear login failures",
                reason=type(exc).__name__,
            )

    def _forget(self, key: str) -> None:
        try:
            self._store.delete(key)
        except StorageError as exc:
            # Left behind, it counts as one failure until it leaves the window: the safe side.
            log_event(
                logger,
                "login_reservation_not_withdrawn",
                logging.WARNING,
                "cannot withdraw a login reservation",
                reason=type(exc).__name__,
            )


# -- per client address, in memory -------------------------------------------------------------


class ClientThrottle:
    """Failed logins per client address, in this instance's memory (thread-safe, bounded)."""

    def __init__(
        self,
        *,
        max_failures: int,
        window_seconds: float,
        clock: Callable[[], float] = time.time,
        max_clients: int = _MAX_CLIENTS,
    ) -> None:
        self._max_failures = max_failures
        self._window = window_seconds
        self._clock = clock
        self._max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def reserve(self, bucket: str) -> float:
        """Count this attempt (LoginThrottled if over the limit); returns its reservation."""
        with self._lock:
            now = self._clock()
            times = self._failures.get(bucket)
            if times is None:
                times = deque()
                self._make_room()
                self._failures[bucket] = times
            self._failures.move_to_end(bucket)
            while times and times[0] <= now - self._window:
                times.popleft()
            if len(times) >= self._max_failures:
                raise LoginThrottled(_retry_after(times[-self._max_failures] + self._window - now))
            times.append(now)
            return now

    def release(self, bucket: str, reservation: float) -> None:
        with self._lock:
            times = self._failures.get(bucket)
            if times is not None and reservation in times:
                times.remove(reservation)

    def _make_room(self) -> None:
        if len(self._failures) < self._max_clients:
            return
        now = self._clock()
        stale = [
            bucket
            for bucket, times in self._failures.items()
            if not times or times[-1] <= now - self._window
        ]
        for bucket in stale:
            del self._failures[bucket]
        while len(self._failures) >= self._max_clients:
            self._failures.popitem(last=False)  # the least recently seen


# -- both ----------------------------------------------------------------------------------------


class LoginAttempt:
    """One login's reservations; the caller reports how it ended exactly once."""

    def __init__(
        self,
        throttle: LoginThrottle,
        username: str,
        client: str,
        client_reservation: float,
        user_key: str,
    ) -> None:
        self._throttle = throttle
        self._username = username
        self._client = client
        self._client_reservation = client_reservation
        self._user_key = user_key
        self._ended = False

    def failed(self) -> None:
        """The credentials were wrong: both reservations stay as failures."""
        self._ended = True

    def succeeded(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._throttle.clients.release(self._client, self._client_reservation)
        self._throttle.users.clear(self._username)

    def abandon(self) -> None:
        """Neither success nor failure (e.g. storage failed): withdraw both reservations."""
        if self._ended:
            return
        self._ended = True
        self._throttle.clients.release(self._client, self._client_reservation)
        self._throttle.users.release(self._user_key)


class LoginThrottle:
    """Both throttles, per-client first (free) then per-username (one write and one listing)."""

    def __init__(
        self,
        store: Store,
        settings: LoginThrottleSettings,
        secret_key: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.users = UserThrottle(
            store,
            secret_key,
            max_failures=settings.max_failures_per_user,
            window_seconds=settings.window_seconds,
            clock=clock,
        )
        self.clients = ClientThrottle(
            max_failures=settings.max_failures_per_client,
            window_seconds=settings.window_seconds,
            clock=clock,
        )

    def begin(self, username: str, client: str) -> LoginAttempt:
        """Reserve this attempt against both limits; LoginThrottled (429) if either is reached."""
        bucket = client_bucket(client)
        try:
            client_reservation = self.clients.reserve(bucket)
        except LoginThrottled:
            metrics.login_throttled("client")  # `xray_login_throttled_total`
            raise
        try:
            user_key = self.users.reserve(username)
        except BaseException as exc:
            self.clients.release(bucket, client_reservation)
            if isinstance(exc, LoginThrottled):
                metrics.login_throttled("user")
            raise
        return LoginAttempt(self, username, bucket, client_reservation, user_key)
