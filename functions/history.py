"""History core: a user's inference records in a time window, newest first, page by page.

Only the keys inside the window are read: records are keyed newest-first per user and day
(`keys.inference_window`), so a listing starts right at the window's newest key and stops at its
oldest, however long the history is. Page tokens are opaque and tamper-proof: the window, the
caller, the user listed and the last id returned, signed with an HMAC key derived from
SECRET_KEY. One record is found by computing its key from the user id and the inference id, so
another user's id is simply not found (no existence oracle).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from common.logs import log_event
from functions.errors import InvalidParameter, NotFound
from functions.records import as_served, iso_time
from storage import ObjectNotFound, Store, keys

__all__ = ["HistoryPage", "HistoryQuery", "HistoryService", "parse_time"]

logger = logging.getLogger(__name__)

_TOKEN_VERSION = 1
# Record GETs of one page in flight at once (one pool per process, shared by its requests): a
# page of 100 from S3 then waits for about 7 round trips instead of 13 at 8. bench
# 'history-s3-latency' (50 ms per request, moto behind a delaying proxy): 8 threads 835-979 ms
# a page, 16 about 900 ms, 32 564-870 ms (moto's own serial time dominates past 16). Half the
# S3 client's pool of 32 connections: at 32 the history alone filled it, and under mixed load
# (the e2e soak) the other requests' connections were opened and discarded by the dozen.
_FETCH_THREADS = 16
# Records read at a time while filtering a page by decision.
_FILTER_CHUNK = 50


_DECODED_PLUS_OFFSET = re.compile(r" (\d{2}:?\d{2})$")
# What openapi.yaml promises: an RFC 3339 / ISO 8601 date, or a date-time with or without an
# offset (naive is UTC). Checked before parsing: `fromisoformat` alone also takes week dates and
# other forms the document does not describe.
_ISO_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?)?$"
)
_LEAP_SECOND = re.compile(r"(\d{2}:\d{2}):60(\.\d+)?")
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def parse_time(text: str, name: str) -> datetime:
    """ISO 8601 date or date-time; naive means UTC.

    A `+01:00` offset sent unencoded in a query string arrives as ` 01:00`: read it as meant.
    RFC 3339's lower-case `t`/`z` and leap seconds (read as the last instant of that minute)
    are accepted too.
    """
    text = _DECODED_PLUS_OFFSET.sub(r"+\1", text.strip())
    if not _ISO_TIME.match(text):
        raise InvalidParameter(f"{name} is not an ISO 8601 time")
    if len(text) > 10:
        text = text[:10] + "T" + text[11:]
    text = _LEAP_SECOND.sub(r"\1:59.999999", text.replace("z", "Z"))
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidParameter(f"{name} is not an ISO 8601 time") from None


@dataclass(frozen=True)
class HistoryQuery:
    caller_id: str
    user_id: str  # whose records (the caller, or anyone for an admin)
    start: datetime | None
    stop: datetime | None
    limit: int
    page_token: str | None = None
    # Only records with this decision: `refer`, or a class name (records without a decision,
    # older and migrated ones, count as their predicted class).
    decision: str | None = None
    # Only records of the DICOM study whose Study Instance UID has this keyed hash
    # (`input.dicom.uid_hashes.study`: functions.dicom.uid_digest).
    study: str | None = None

    @property
    def filtered(self) -> bool:
        return self.decision is not None or self.study is not None

    def matches(self, record: dict[str, Any]) -> bool:
        if self.decision is not None and record_decision(record) != self.decision:
            return False
        return self.study is None or record_study(record) == self.study


def record_study(record: dict[str, Any]) -> Any:
    """The keyed hash of a record's DICOM Study Instance UID; None for other uploads."""
    source = record.get("input")
    dicom = source.get("dicom") if isinstance(source, dict) else None
    hashes = dicom.get("uid_hashes") if isinstance(dicom, dict) else None
    return hashes.get("study") if isinstance(hashes, dict) else None


def record_decision(record: dict[str, Any]) -> Any:
    """A record's decision: `refer` or a class; the predicted class for records without one."""
    return record.get("decision", record.get("predicted_class"))


@dataclass(frozen=True)
class HistoryPage:
    user_id: str
    start: datetime
    stop: datetime
    records: list[dict[str, Any]]
    next_page_token: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "start_time": iso_time(self.start),
            "stop_time": iso_time(self.stop),
            "count": len(self.records),
            "records": self.records,
            "next_page_token": self.next_page_token,
        }


class HistoryService:
    def __init__(
        self,
        store: Store,
        secret_key: str,
        *,
        default_window: timedelta = timedelta(hours=24),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        # A key of its own (RFC 8725 §3.1 spirit: one key, one purpose), derived from the secret.
        self._token_key = hmac.new(
            secret_key.encode("utf-8"), b"history-page-token/v1", hashlib.sha256
        ).digest()
        self._default_window = default_window
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    # -- listing -------------------------------------------------------------------------------

    def page(self, query: HistoryQuery) -> HistoryPage:
        start, stop, after_id = self._window(query)
        window = keys.inference_window(query.user_id, start, stop)
        start_after = (
            keys.inference_record(query.user_id, after_id) if after_id else window.start_after
        )
        if query.filtered:
            return self._filtered_page(query, window, start_after, (start, stop))
        found: list[str] = []
        for info in self._store.list(
            window.prefix, start_after=start_after, page_size=min(query.limit + 1, 1000)
        ):
            if info.key >= window.end_before:
                break
            if info.key.endswith(".json"):
                found.append(info.key)
                if len(found) > query.limit:
                    break
        records = self._fetch(found[: query.limit])
        next_token = None
        if len(found) > query.limit:
            last_id = keys.inference_id_from_record(found[query.limit - 1])
            next_token = self._sign(query, start, stop, last_id)
        return HistoryPage(query.user_id, start, stop, records, next_token)

    def _filtered_page(
        self,
        query: HistoryQuery,
        window: keys.InferenceWindow,
        start_after: str,
        bounds: tuple[datetime, datetime],
    ) -> HistoryPage:
        """A page of the records matching the query's filters (decision, study): the window's
        records are read in chunks, newest first, until one more than the page matched (or the
        window ends)."""
        chunk_size = max(query.limit + 1, _FILTER_CHUNK)
        records: list[dict[str, Any]] = []
        more = False
        chunk: list[str] = []

        def take(keys_read: list[str]) -> bool:
            nonlocal more
            for record in self._fetch(keys_read):
                if not query.matches(record):
                    continue
                if len(records) == query.limit:
                    more = True
                    return True
                records.append(record)
            return False

        for info in self._store.list(
            window.prefix, start_after=start_after, page_size=min(chunk_size, 1000)
        ):
            if info.key >= window.end_before:
                break
            if not info.key.endswith(".json"):
                continue
            chunk.append(info.key)
            if len(chunk) == chunk_size:
                done, chunk = take(chunk), []
                if done:
                    break
        if not more and chunk:
            take(chunk)
        next_token = None
        if more:
            next_token = self._sign(query, bounds[0], bounds[1], str(records[-1]["id"]))
        return HistoryPage(query.user_id, bounds[0], bounds[1], records, next_token)

    def all_records(
        self, user_id: str, start: datetime | None, stop: datetime | None
    ) -> list[dict[str, Any]] | None:
        """Every record of `user_id` with `start <= time <= stop` (None: unbounded), oldest
        first; None when the user has no record at all (the original `/user/results` tells
        the two apart)."""
        window = keys.inference_window(
            user_id, start or _EARLIEST, stop or datetime.max.replace(tzinfo=UTC)
        )
        found: list[str] = []
        any_record = False
        empty_window = start is not None and stop is not None and start > stop
        for info in self._store.list(window.prefix):
            if not info.key.endswith(".json"):
                continue
            any_record = True
            if not empty_window and window.start_after < info.key < window.end_before:
                found.append(info.key)
        if not any_record:
            return None
        return list(reversed(self._fetch(found)))

    def _window(self, query: HistoryQuery) -> tuple[datetime, datetime, str | None]:
        if query.page_token is not None:
            start, stop, after_id = self._verify(query)
            if (query.start is not None and query.start != start) or (
                query.stop is not None and query.stop != stop
            ):
                raise InvalidParameter(
                    "page_token belongs to another time window", code="invalid_page_token"
                )
            return start, stop, after_id
        stop = query.stop or self._clock()
        try:
            start = query.start or (stop - self._default_window)
        except OverflowError:  # a stop_time within a day of year 1
            start = _EARLIEST
        if start > stop:
            raise InvalidParameter("start_time is after stop_time")
        return start, stop, None

    def _fetch(self, record_keys: list[str]) -> list[dict[str, Any]]:
        if len(record_keys) <= 1:
            results = [self._get_record(key) for key in record_keys]
        else:
            results = list(self._pool().map(self._get_record, record_keys))
        return [record for record in results if record is not None]

    def _get_record(self, key: str) -> dict[str, Any] | None:
        try:
            record = self._store.get_json(key)
        except ObjectNotFound:
            return None  # deleted between the listing and the read
        except ValueError:
            log_event(
                logger,
                "record_unreadable",
                logging.WARNING,
                "skipping an unreadable inference record",
            )
            return None
        return as_served(record) if isinstance(record, dict) else None

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=_FETCH_THREADS, thread_name_prefix="history-fetch"
                )
            return self._executor

    # -- one record ----------------------------------------------------------------------------

    def get(self, user_id: str, inference_id: str) -> dict[str, Any]:
        key = _record_key(user_id, inference_id)
        try:
            record = self._store.get_json(key)
        except ObjectNotFound:
            raise NotFound("no such inference") from None
        except ValueError:
            # Not JSON (a damaged object): the listing skips it, so it does not exist here either.
            log_event(
                logger,
                "record_unreadable",
                logging.WARNING,
                "an unreadable inference record was asked for; answered not found",
            )
            raise NotFound("no such inference") from None
        if not isinstance(record, dict):
            raise NotFound("no such inference")
        return as_served(record)

    def gradcam_png(self, user_id: str, inference_id: str) -> bytes:
        _record_key(user_id, inference_id)  # validates the id
        try:
            return self._store.get_bytes(keys.gradcam_image(user_id, inference_id))
        except ObjectNotFound:
            raise NotFound("no Grad-CAM image for this inference") from None

    # -- page tokens ---------------------------------------------------------------------------

    def _sign(self, query: HistoryQuery, start: datetime, stop: datetime, last_id: str) -> str:
        payload = {
            "v": _TOKEN_VERSION,
            "c": query.caller_id,
            "u": query.user_id,
            "s": start.isoformat(),
            "e": stop.isoformat(),
            "a": last_id,
        }
        if query.decision is not None:
            payload["d"] = query.decision
        if query.study is not None:
            payload["st"] = query.study
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        mac = hmac.new(self._token_key, body.encode("ascii"), hashlib.sha256).digest()
        return f"{body}.{_b64(mac)}"

    def _verify(self, query: HistoryQuery) -> tuple[datetime, datetime, str]:
        invalid = InvalidParameter("page_token is not valid", code="invalid_page_token")
        token = query.page_token or ""
        body, _, signature = token.partition(".")
        if not body or not signature or len(token) > 2048:
            raise invalid
        expected = hmac.new(self._token_key, body.encode("ascii", "replace"), hashlib.sha256)
        try:
            if not hmac.compare_digest(expected.digest(), _unb64(signature)):
                raise invalid
            payload = json.loads(_unb64(body))
            if (
                payload.get("v") != _TOKEN_VERSION
                or payload.get("c") != query.caller_id
                or payload.get("u") != query.user_id
                or payload.get("d") != query.decision
                or payload.get("st") != query.study
            ):
                raise invalid
            start = datetime.fromisoformat(payload["s"])
            stop = datetime.fromisoformat(payload["e"])
            after_id = str(payload["a"])
            keys.inference_id_time(after_id)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise invalid from None
        return start, stop, after_id


def _record_key(user_id: str, inference_id: str) -> str:
    try:
        return keys.inference_record(user_id, inference_id)
    except ValueError:
        raise NotFound("no such inference") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
