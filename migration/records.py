"""The lean steps of the migration: the users file, `history.csv` and the Grad-CAM images.

The original's `history.csv` (`id;datetime;covid;no-covid;normal`, naive UTC times, one shared
file appended per `/x-ray` call) becomes one inference record per row in the new layout, so
`/history` and `/user/results` list it. The original put its model's outputs under the wrong
names (reference section 1): column `covid` holds P(normal), `no-covid` P(covid) and `normal`
P(no-covid); each probability is put under its true name here. A row's record id comes from the
row itself (its time, and a digest of the source and the line), and records are written
create-only: running the migration twice imports nothing twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from functions.records import migrated_record
from migration.report import StepReport
from storage import ObjectNotFound, PreconditionFailed, Store, keys

__all__ = [
    "CLASS_ORDER",
    "HistoryRow",
    "copy_gradcam_images",
    "copy_users_file",
    "migrate_history",
    "parse_history",
]

# The model's classes in its output order (every record's `class_names`).
CLASS_ORDER: tuple[str, ...] = ("normal", "covid", "no-covid")
# The original's column -> the class whose probability it really holds.
_TRUE_CLASS = {"covid": "normal", "no-covid": "covid", "normal": "no-covid"}
_HEADER = ["id", "datetime", "covid", "no-covid", "normal"]
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S")
_WRITERS = 8


@dataclass(frozen=True)
class HistoryRow:
    line: int  # in the file, the header being line 1
    user_id: str
    moment: datetime
    probabilities: dict[str, float]  # under the true class names
    digest: str  # of the source and the line's text: the record id's random part


def _parse_time(text: str) -> datetime:
    for pattern in _TIME_FORMATS:
        try:
            return datetime.strptime(text.strip(), pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"datetime {text!r} is not YYYY-MM-DD HH:MM:SS[.ffffff]")


def _probability(text: str, column: str) -> float:
    value = float(text)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{column} {text!r} is not a probability")
    return value


def parse_history(data: bytes, source: str) -> Iterator[HistoryRow | str]:
    """Each row as a HistoryRow, or a problem naming its line (the row is skipped)."""
    text = data.decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text), delimiter=";")
    header = next(reader, None)
    if header is None:
        return
    if [name.strip() for name in header] != _HEADER:
        yield f"line 1: the header is {';'.join(header)!r}, not {';'.join(_HEADER)!r}"
        return
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        try:
            if len(row) != len(_HEADER):
                raise ValueError(f"{len(row)} fields instead of {len(_HEADER)}")
            values = dict(zip(_HEADER, row, strict=True))
            user_id = keys.check_user_id(str(int(values["id"].strip())))
            moment = _parse_time(values["datetime"])
            probabilities = {
                _TRUE_CLASS[column]: _probability(values[column], column) for column in _TRUE_CLASS
            }
        except ValueError as exc:
            yield f"line {line}: {exc}; skipped"
            continue
        digest = hashlib.sha256(f"{source}\n{line}\n{';'.join(row)}".encode()).hexdigest()[:32]
        yield HistoryRow(line, user_id, moment, probabilities, digest)


def _record_bytes(row: HistoryRow, source: str) -> tuple[str, bytes]:
    inference_id = keys.new_inference_id(row.moment, row.digest)
    record = migrated_record(
        inference_id=inference_id,
        user_id=row.user_id,
        class_names=CLASS_ORDER,
        probabilities=row.probabilities,
        source=source,
        line=row.line,
    )
    data = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return keys.inference_record(row.user_id, inference_id), data


def migrate_history(source: Store, destination: Store, step: StepReport, *, dry_run: bool) -> None:
    """`output/inference/history.csv` of `source` as records in `destination`."""
    try:
        data = source.get_bytes(keys.LEGACY_HISTORY_FILE)
    except ObjectNotFound:
        step.notes.append(f"no {keys.LEGACY_HISTORY_FILE} in the source")
        return
    origin = keys.LEGACY_HISTORY_FILE
    rows: list[HistoryRow] = []
    for parsed in parse_history(data, source.describe() + origin):
        if isinstance(parsed, str):
            step.problems.append(parsed)
            step.counts["rows_skipped"] += 1
        else:
            rows.append(parsed)

    # What an earlier run wrote, listed once per user (a listing returns a thousand keys per
    # call; asking per record would be one call each).
    existing = {
        info.key
        for user_id in sorted({row.user_id for row in rows})
        for info in destination.list(keys.inference_user_prefix(user_id))
    }

    def write(row: HistoryRow) -> str:
        key, record = _record_bytes(row, origin)
        if key in existing:
            return "already_there"
        if dry_run:
            return "to_write"
        try:
            destination.put(key, record, content_type="application/json", if_none_match=True)
        except PreconditionFailed:
            return "already_there"
        return "written"

    with ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="migrate-history") as pool:
        for outcome in pool.map(write, rows):
            step.counts[outcome] += 1


def copy_users_file(
    source_auth: Store, destination_auth: Store, step: StepReport, *, dry_run: bool
) -> None:
    """The users file, as is: integer ids and bcrypt hashes keep working. An existing,
    different users file in the destination is kept (and said)."""
    try:
        data = source_auth.get_bytes(keys.USERS_FILE)
    except ObjectNotFound:
        step.notes.append(f"no {keys.USERS_FILE} in the source")
        return
    try:
        existing: bytes | None = destination_auth.get_bytes(keys.USERS_FILE)
    except ObjectNotFound:
        existing = None
    if existing == data:
        step.counts["already_there"] += 1
        return
    if existing is not None:
        step.counts["kept_destination"] += 1
        step.problems.append(
            f"the destination has a different {keys.USERS_FILE}: kept it, the source's was not "
            "copied (merge the two by hand with `xray-users`)"
        )
        return
    if dry_run:
        step.counts["to_write"] += 1
        return
    try:
        destination_auth.put(keys.USERS_FILE, data, content_type="text/csv", if_none_match=True)
    except PreconditionFailed:
        step.counts["already_there"] += 1
        return
    step.counts["written"] += 1


def copy_gradcam_images(
    source: Store, destination: Store, step: StepReport, *, dry_run: bool
) -> None:
    """The original's Grad-CAM PNGs: tied to no user or record, so no route can serve them;
    each is kept (copied under `output/grad_cam/_legacy/` when the store differs) and listed."""
    same_store = source.describe() == destination.describe()
    for area in keys.LEGACY_GRADCAM_AREAS:
        for info in source.list(area):
            name = info.key[len(area) :]
            if "/" in name or not name.lower().endswith(".png"):
                continue  # the new layout's user folders, or not an image
            step.items.append(info.key)
            if same_store:
                step.counts["kept_in_place"] += 1
                continue
            target = keys.legacy_gradcam_copy(name)
            if destination.exists(target):
                step.counts["already_there"] += 1
            elif dry_run:
                step.counts["to_write"] += 1
            else:
                try:
                    source_bytes = source.get_bytes(info.key)
                    destination.put(
                        target, source_bytes, content_type="image/png", if_none_match=True
                    )
                    step.counts["written"] += 1
                except PreconditionFailed:
                    step.counts["already_there"] += 1
