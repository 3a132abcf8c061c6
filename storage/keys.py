"""The storage hierarchy, spelled out once.

Every object key the system reads or writes is produced by a small pure function here; no other
module builds a key string. Keys are relative to the root of a store (or, for the per-area
overrides `DB_AUTH_STORAGE_PATH` and `DB_STORAGE_PATH`, to the root of that area's store).

Layout (kept from the original system so existing stores keep working)::

    input/data/                              sample X-ray PNGs for trying the API
    input/db/<batch>/<split>/<class>/[images/]*.png   the training image database
    input/db_auth/authentication.csv         users
    input/db_auth/login_failures/<digest>/<newest-first ms>-<random>   failed logins (throttle)
    input/model/<name>/registry.json         stable/canary aliases, versions, metrics, lineage
    input/model/<name>/<version>/            a published SavedModel (TF Serving layout)
    input/model/<name>/<version>/manifest.json   completeness marker, written last
    output/learning/<run_id>/...             a training run's outputs
    output/inference/<user>/<day>/<time>-<id>.json   one record per inference, newest first
    output/grad_cam/<user>/<date>/<id>.png   Grad-CAM overlays returned to users
    output/monitoring/<YYYY-MM-DD>/summary.json   the drift job's day: summary, one plot a version
    output/monitoring/compare/<time>/report.json  a stable vs canary comparison and its plots
    output/monitoring/reference/<run_id>.json     a training run's data, summarised for drift

The original system's own files, which the migration reads (and the keys it keeps them under)::

    input/model/<name>.hdf5                  Keras 2 weights of the original model
    output/inference/history.csv             the original's one shared history file
    output/learning/grad_cam/<uuid>.png      its Grad-CAM images (also output/grad_cam/*.png)
    output/grad_cam/_legacy/<file>.png       those images, kept in a migrated store
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

__all__ = [
    "AUTH_AREA",
    "DATA_AREA",
    "DB_AREA",
    "GRAD_CAM_AREA",
    "INFERENCE_AREA",
    "LEARNING_AREA",
    "LEGACY_GRADCAM_AREAS",
    "LEGACY_HISTORY_FILE",
    "LOGIN_FAILURES_AREA",
    "MODEL_AREA",
    "MONITORING_AREA",
    "USERS_FILE",
    "InferenceWindow",
    "check_model_name",
    "check_run_id",
    "check_user_id",
    "db_prefix",
    "gradcam_image",
    "inference_id_from_record",
    "inference_id_time",
    "inference_record",
    "inference_user_from_key",
    "inference_user_prefix",
    "inference_users_after",
    "inference_window",
    "learning_candidate_prefix",
    "learning_file",
    "learning_run_prefix",
    "legacy_gradcam_copy",
    "legacy_weights_file",
    "login_failure",
    "login_failure_time",
    "login_failures_prefix",
    "model_prefix",
    "model_registry",
    "model_version_from_key",
    "model_version_manifest",
    "model_version_prefix",
    "monitoring_compare_file",
    "monitoring_day_file",
    "monitoring_reference",
    "new_inference_id",
    "sample_image",
    "users_file",
]

# Top-level areas. Each ends with "/" so it can be used as a listing prefix.
DATA_AREA = "input/data/"
DB_AREA = "input/db/"
AUTH_AREA = "input/db_auth/"
MODEL_AREA = "input/model/"
LEARNING_AREA = "output/learning/"
INFERENCE_AREA = "output/inference/"
GRAD_CAM_AREA = "output/grad_cam/"
MONITORING_AREA = "output/monitoring/"

# Within the auth area (which DB_AUTH_STORAGE_PATH may move elsewhere).
USERS_FILE = "authentication.csv"
# One object per failed login, under a keyed digest of the username: every function instance
# sees them, and nothing is read-modify-written (expire the area after a day by lifecycle rule).
LOGIN_FAILURES_AREA = "login_failures/"
_LOGIN_TIME_DIGITS = 13  # milliseconds since the epoch, until the year 2286
_LOGIN_MAX_MILLIS = 10**_LOGIN_TIME_DIGITS - 1

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ID_RE = re.compile(r"^(\d{8}T\d{12})Z([0-9a-f]{32})$")

# Time-ordered keys sort newest first: fixed-width complements of the day and of the
# microsecond within the day. A one-day window is then one contiguous run of keys that
# `start_after` reaches directly, however long the history grows.
_DAY_COMPLEMENT = 99_999_999
_US_PER_DAY = 86_400_000_000


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value) or ".." in value:
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def check_user_id(user_id: str) -> str:
    """A user id as it may appear in a key (letters, digits, `_.-`; no path tricks)."""
    return _check_name(user_id, "user id")


def check_model_name(name: str) -> str:
    return _check_name(name, "model name")


def check_run_id(run_id: str) -> str:
    return _check_name(run_id, "run id")


# -- input/ -----------------------------------------------------------------------------------


def sample_image(file_name: str) -> str:
    return DATA_AREA + _check_name(file_name, "sample file name")


def db_prefix(batch: str | None = None) -> str:
    """The image database, or one batch of it (relative to the store root)."""
    if batch is None:
        return DB_AREA
    return f"{DB_AREA}{_check_name(batch, 'batch name')}/"


def users_file() -> str:
    """The users file relative to the store root (when the auth area is not overridden)."""
    return AUTH_AREA + USERS_FILE


def login_failures_prefix(username_digest: str) -> str:
    """A username's failed logins, relative to the auth area (newest first when listed)."""
    if not re.fullmatch(r"[0-9a-f]{16,128}", username_digest or ""):
        raise ValueError("a username digest is 16 to 128 lowercase hex digits")
    return f"{LOGIN_FAILURES_AREA}{username_digest}/"


def login_failure(username_digest: str, epoch_seconds: float, token: str) -> str:
    """One failed login at `epoch_seconds` (the random `token` keeps concurrent ones apart)."""
    if not re.fullmatch(r"[0-9a-f]{8,64}", token or ""):
        raise ValueError("token must be 8 to 64 lowercase hex digits")
    millis = min(_LOGIN_MAX_MILLIS, max(0, int(epoch_seconds * 1000)))
    inverted = _LOGIN_MAX_MILLIS - millis
    return f"{login_failures_prefix(username_digest)}{inverted:0{_LOGIN_TIME_DIGITS}d}-{token}"


def login_failure_time(key: str) -> float | None:
    """The time (epoch seconds) a failed-login key records, or None if it is not one."""
    digits = key.rsplit("/", 1)[-1].split("-", 1)[0]
    if len(digits) != _LOGIN_TIME_DIGITS or not (digits.isascii() and digits.isdigit()):
        return None
    return (_LOGIN_MAX_MILLIS - int(digits)) / 1000


def model_prefix(name: str) -> str:
    """TF Serving's model base path for `name`: the parent of the numbered version folders."""
    return f"{MODEL_AREA}{check_model_name(name)}/"


def model_registry(name: str) -> str:
    return model_prefix(name) + "registry.json"


def model_version_prefix(name: str, version: int) -> str:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"invalid model version: {version!r}")
    return f"{model_prefix(name)}{version}/"


def model_version_manifest(name: str, version: int) -> str:
    """Completeness marker of a published version: lists every file; written last."""
    return model_version_prefix(name, version) + "manifest.json"


def model_version_from_key(name: str, key: str) -> int | None:
    """The version number a key under the model's base path belongs to, if any."""
    base = model_prefix(name)
    if not key.startswith(base):
        return None
    head = key[len(base) :].split("/", 1)[0]
    return int(head) if head.isascii() and head.isdigit() and "/" in key[len(base) :] else None


def legacy_weights_file(name: str) -> str:
    """The original system's weights of model `name` (`<PROD_MODEL_NAME>.hdf5`)."""
    return f"{MODEL_AREA}{check_model_name(name)}.hdf5"


# -- output/learning/ -------------------------------------------------------------------------


def learning_run_prefix(run_id: str) -> str:
    return f"{LEARNING_AREA}{check_run_id(run_id)}/"


def learning_file(run_id: str, file_name: str) -> str:
    """A named output of a training run (history.csv, decision.json, plots, the log...)."""
    return learning_run_prefix(run_id) + _check_name(file_name, "learning file name")


def learning_candidate_prefix(run_id: str) -> str:
    """The candidate SavedModel a run produced, promoted or not."""
    return learning_run_prefix(run_id) + "candidate/"


# -- output/inference/ and output/grad_cam/ ---------------------------------------------------


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def new_inference_id(moment: datetime, token: str | None = None) -> str:
    """An inference id: its UTC time (to the microsecond) and 128 random bits.

    The time lets the record's key be computed from the id alone (no scan); the random part
    makes ids unguessable.
    """
    moment = _utc(moment)
    token = secrets.token_hex(16) if token is None else token
    if not re.fullmatch(r"[0-9a-f]{32}", token):
        raise ValueError("token must be 32 lowercase hex digits")
    return f"{moment:%Y%m%dT%H%M%S%f}Z{token}"


def inference_id_time(inference_id: str) -> datetime:
    """The time encoded in an inference id; ValueError if it is not one."""
    match = _ID_RE.fullmatch(inference_id) if isinstance(inference_id, str) else None
    if not match:
        raise ValueError("not an inference id")
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)


def _day_part(moment: datetime) -> str:
    day = int(f"{moment:%Y%m%d}")
    return f"{_DAY_COMPLEMENT - day:08d}-{day:08d}"


def _time_part(moment: datetime) -> str:
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    micros = (moment - midnight) // timedelta(microseconds=1)
    return f"{_US_PER_DAY - 1 - micros:011d}"


def inference_user_prefix(user_id: str) -> str:
    return f"{INFERENCE_AREA}{check_user_id(user_id)}/"


def inference_record(user_id: str, inference_id: str) -> str:
    """The record of one inference. Listing a user's prefix yields records newest first."""
    moment = inference_id_time(inference_id)
    return (
        f"{inference_user_prefix(user_id)}{_day_part(moment)}/"
        f"{_time_part(moment)}-{inference_id}.json"
    )


def inference_id_from_record(key: str) -> str:
    """The inference id in a record's key (the inverse of `inference_record`)."""
    return key.rsplit("/", 1)[-1].split("-", 1)[1].removesuffix(".json")


@dataclass(frozen=True)
class InferenceWindow:
    """Where a time window's records lie among a user's keys (listed in ascending key order).

    Records from newest (`stop`) to oldest (`start`) are the keys after `start_after` and
    before `end_before`.
    """

    prefix: str
    start_after: str
    end_before: str


def inference_window(user_id: str, start: datetime, stop: datetime) -> InferenceWindow:
    """Key bounds of the records with `start <= time <= stop` (naive times are UTC)."""
    start, stop = _utc(start), _utc(stop)
    prefix = inference_user_prefix(user_id)
    # A record at time t has key "<day>/<time>-<id>.json"; "-" (0x2d) sorts before "." (0x2e).
    return InferenceWindow(
        prefix=prefix,
        start_after=f"{prefix}{_day_part(stop)}/{_time_part(stop)}",
        end_before=f"{prefix}{_day_part(start)}/{_time_part(start)}.",
    )


def inference_user_from_key(key: str) -> str | None:
    """The user a key under the inference area belongs to; None for a key outside any user's
    folder (the original system's `history.csv`, or a key outside the area)."""
    if not key.startswith(INFERENCE_AREA):
        return None
    user, slash, _ = key[len(INFERENCE_AREA) :].partition("/")
    return user if slash and _NAME_RE.fullmatch(user) and ".." not in user else None


def inference_users_after(user_id: str) -> str:
    """A `start_after` past every key of `user_id` and before the next user's keys.

    A user's keys are `<area><user>/...`; "0" is the character after "/", so `<area><user>0`
    sorts after all of them, and every other user's keys sort either before `<area><user>/`
    or after `<area><user>0`. Listing from here with one key at a time walks the users
    without reading their records (S3 listings have no "skip to the next folder").
    """
    return f"{INFERENCE_AREA}{check_user_id(user_id)}0"


def gradcam_image(user_id: str, inference_id: str) -> str:
    moment = inference_id_time(inference_id)
    return f"{GRAD_CAM_AREA}{check_user_id(user_id)}/{moment:%Y-%m-%d}/{inference_id}.png"


# -- output/monitoring/ ------------------------------------------------------------------------


def _check_day(day: date) -> str:
    if not isinstance(day, date) or isinstance(day, datetime):
        raise ValueError(f"invalid day: {day!r}")
    return f"{day:%Y-%m-%d}"


def monitoring_day_file(day: date, file_name: str) -> str:
    """A file of the drift job's report on `day` (summary.json, plots)."""
    return f"{MONITORING_AREA}{_check_day(day)}/{_check_name(file_name, 'monitoring file name')}"


def monitoring_compare_file(moment: datetime, file_name: str) -> str:
    """A file of the stable vs canary comparison made at `moment` (report.json, plots)."""
    stamp = f"{_utc(moment):%Y%m%dT%H%M%SZ}"
    name = _check_name(file_name, "monitoring file name")
    return f"{MONITORING_AREA}compare/{stamp}/{name}"


def monitoring_reference(run_id: str) -> str:
    """The summary of a training run's data the drift job compares live traffic with."""
    return f"{MONITORING_AREA}reference/{check_run_id(run_id)}.json"


# -- the original system's files (read by the migration) -----------------------------------------

LEGACY_HISTORY_FILE = INFERENCE_AREA + "history.csv"
# Where the original wrote Grad-CAM images: its code (learning/grad_cam/), its README (grad_cam/).
LEGACY_GRADCAM_AREAS: tuple[str, ...] = (LEARNING_AREA + "grad_cam/", GRAD_CAM_AREA)
# Kept under a folder no user id can name (user ids start with a letter or digit).
_LEGACY_GRADCAM_COPIES = GRAD_CAM_AREA + "_legacy/"


def legacy_gradcam_copy(file_name: str) -> str:
    """Where a migrated store keeps one of the original's Grad-CAM images."""
    return _LEGACY_GRADCAM_COPIES + _check_name(file_name, "Grad-CAM file name")
