"""Discover the image database: batches, splits and classes, and the dataset's fingerprint.

The database (the `db` store: `input/db/`, or `DB_STORAGE_PATH`) holds one or more batches, each
in the COVID-QU-Ex layout (`<batch>/<Train|Val|Test>/<COVID-19|Non-COVID|Normal>/images/*.png`,
with `lung masks/` and `infection masks/` beside `images/`, ignored) or the plain layout
(`<batch>/<split>/<class>/*.png`); a batch may also lie directly at the database root, and a
batch without split folders (`<batch>/<class>/[images/]*.png`) is split here, seeded and
stratified. No TensorFlow: this runs before the job decides whether there is anything to do.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cnn_vit.config import CLASS_NAMES
from storage import InvalidKey, ObjectInfo, Store
from storage.base import validate_key

logger = logging.getLogger(__name__)

__all__ = [
    "DICOM_SUFFIX",
    "IMAGE_SUFFIXES",
    "SPLITS",
    "DatasetError",
    "DatasetIndex",
    "ImageRecord",
    "SplitFractions",
    "UnknownClassError",
    "assign_missing_splits",
    "canonical_class",
    "dataset_fingerprint",
    "discover_dataset",
    "index_images",
    "parse_image_key",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
# Split folder names, lower-cased (COVID-QU-Ex: Train, Val, Test).
_SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm")
# DICOM files: converted to PNG by the functions' own conversion (imaging.dicom) before
# training reads them (training_job.image_cache), so train and serve see the same pixels.
DICOM_SUFFIX = ".dcm"
# The folder COVID-QU-Ex keeps the X-rays in, beside the mask folders.
_IMAGES_FOLDER = "images"


# Folder names of the COVID-QU-Ex release and of plain layouts, lower-cased.
_FOLDER_TO_CLASS = {
    "normal": "normal",
    "covid-19": "covid",
    "covid19": "covid",
    "covid": "covid",
    "non-covid": "no-covid",
    "non_covid": "no-covid",
    "noncovid": "no-covid",
    "no-covid": "no-covid",
    "no_covid": "no-covid",
}


class UnknownClassError(ValueError):
    """A database folder whose name maps to no class."""


def canonical_class(folder_name: str) -> str:
    """The class a database folder holds (`COVID-19` -> `covid`); case-insensitive."""
    try:
        return _FOLDER_TO_CLASS[folder_name.strip().lower()]
    except KeyError:
        known = ", ".join(sorted({"Normal", "COVID-19", "Non-COVID", *CLASS_NAMES}))
        raise UnknownClassError(
            f"folder {folder_name!r} is not a known class (expected one of: {known})"
        ) from None


class DatasetError(ValueError):
    """The database cannot be used as it is: an unknown class folder, no images, no test set."""


@dataclass(frozen=True)
class ImageRecord:
    """One X-ray of the database: its key (relative to the db store), version tag and place."""

    key: str
    etag: str
    size: int
    batch: str  # "" for a batch at the database root
    class_name: str
    split: str | None  # None until a batch without split folders is split
    split_given: bool = True

    @property
    def label(self) -> int:
        return CLASS_NAMES.index(self.class_name)


@dataclass(frozen=True)
class SplitFractions:
    """Shares of val and test when a batch comes without splits (train takes the rest)."""

    val: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        if self.val < 0 or self.test < 0 or self.val + self.test >= 1:
            raise ValueError("val and test fractions must be >= 0 and leave room for train")


@dataclass(frozen=True)
class DatasetIndex:
    """Every usable image of the database, with its split, and the dataset's fingerprint."""

    records: tuple[ImageRecord, ...]
    fingerprint: str
    ignored: int = 0  # files that are not training images (masks, other files)
    source: str = ""
    carved: Mapping[str, int] = field(default_factory=dict)  # split -> images split off here
    # Image key -> its lesion mask's key (COVID-QU-Ex `infection masks/` beside `images/`).
    masks: Mapping[str, str] = field(default_factory=dict)

    def split(self, name: str) -> list[ImageRecord]:
        return [record for record in self.records if record.split == name]

    @property
    def batches(self) -> list[str]:
        return sorted({record.batch for record in self.records})

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class."""
        table = {split: dict.fromkeys(CLASS_NAMES, 0) for split in SPLITS}
        for record in self.records:
            if record.split is not None:
                table[record.split][record.class_name] += 1
        return table

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "images": len(self.records),
            "batches": self.batches,
            "per_split": self.counts(),
            "ignored_files": self.ignored,
            "split_here": dict(self.carved),
        }


def _is_mask_folder(name: str) -> bool:
    # COVID-QU-Ex: "lung masks", "infection masks"; tolerate "Lung Masks", "lung_masks".
    return name.strip().lower().replace("_", " ").endswith("masks")


def parse_image_key(key: str) -> tuple[str, str | None, str] | None:
    """(batch, split or None, class) of a database key, or None when it is not a training image.

    Raises DatasetError for an image in a folder that names no known class.
    """
    parts = key.split("/")
    name, folders = parts[-1], parts[:-1]
    if not name.lower().endswith(IMAGE_SUFFIXES) or name.startswith("."):
        return None
    if any(_is_mask_folder(folder) for folder in folders):
        return None
    if folders and folders[-1].lower() == _IMAGES_FOLDER:
        folders = folders[:-1]
    if not folders:
        raise DatasetError(
            f"image {key!r} lies at the database root; put it in a class folder "
            "(<batch>/<split>/<class>/ or <batch>/<class>/)"
        )
    class_folder = folders[-1]
    try:
        class_name = canonical_class(class_folder)
    except UnknownClassError as exc:
        where = "/".join(folders)
        raise DatasetError(f"{exc} (in {where}/, holding {key!r})") from None
    split = _SPLIT_FOLDERS.get(folders[-2].strip().lower()) if len(folders) >= 2 else None
    batch_folders = folders[:-2] if split is not None else folders[:-1]
    return "/".join(batch_folders), split, class_name


def index_images(objects: Iterable[ObjectInfo]) -> tuple[list[ImageRecord], int]:
    """Records of the training images among `objects` and the count of ignored files."""
    records: list[ImageRecord] = []
    ignored = 0
    for info in objects:
        try:
            validate_key(info.key)
        except InvalidKey:
            # S3 accepts keys like `a//b.png` or `../x.png` (an `aws s3 cp` into "prefix/");
            # they cannot be read through the store, so they are ignored, not fatal.
            logger.warning("ignoring a database object whose key is not usable: %r", info.key)
            ignored += 1
            continue
        parsed = parse_image_key(info.key)
        if parsed is None:
            ignored += 1
            continue
        batch, split, class_name = parsed
        records.append(
            ImageRecord(
                key=info.key,
                etag=info.etag,
                size=info.size,
                batch=batch,
                class_name=class_name,
                split=split,
                split_given=split is not None,
            )
        )
    return records, ignored


def _rank(seed: int, key: str) -> str:
    # A key's place in its group's seeded order: independent of listing order and of the other
    # keys, so an image keeps its split while the group grows (only images at a boundary move).
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def _carve(
    records: list[ImageRecord], seed: int, shares: Mapping[str, float], rest: str
) -> list[ImageRecord]:
    """Give each record of one (batch, class) group a split: seeded order, exact quotas."""
    ordered = sorted(records, key=lambda record: _rank(seed, record.key))
    total = len(ordered)
    result: list[ImageRecord] = []
    start = 0
    for split, share in shares.items():
        count = round(total * share)
        if share > 0 and count == 0 and total - start > 1:
            count = 1  # a small group still gives each split an image, keeping one for `rest`
        count = min(count, max(0, total - start - 1))
        result += [replace(record, split=split) for record in ordered[start : start + count]]
        start += count
    result += [replace(record, split=rest) for record in ordered[start:]]
    return result


def assign_missing_splits(
    records: list[ImageRecord], seed: int = 0, fractions: SplitFractions | None = None
) -> tuple[list[ImageRecord], dict[str, int]]:
    """Split batches that came without split folders; carve val/test out of train if missing.

    Batches without splits are split per class (stratified) in a seeded order. When the whole
    database then still has no val (or no test) images, that split is carved out of the train
    images the same way, so evaluation always has a held-out set.
    """
    fractions = fractions or SplitFractions()
    groups: dict[tuple[str, str], list[ImageRecord]] = {}
    done: list[ImageRecord] = []
    for record in records:
        if record.split is None:
            groups.setdefault((record.batch, record.class_name), []).append(record)
        else:
            done.append(record)
    carved: Counter[str] = Counter()
    shares = {"test": fractions.test, "val": fractions.val}
    for group in groups.values():
        for record in _carve(group, seed, shares, "train"):
            carved[str(record.split)] += 1
            done.append(record)
    for missing in ("test", "val"):
        if any(record.split == missing for record in done):
            continue
        share = getattr(fractions, missing) / max(1e-9, 1.0 - fractions.val - fractions.test)
        train_groups: dict[str, list[ImageRecord]] = {}
        kept: list[ImageRecord] = []
        for record in done:
            if record.split == "train":
                train_groups.setdefault(record.class_name, []).append(record)
            else:
                kept.append(record)
        for group in train_groups.values():
            for record in _carve(group, seed, {missing: min(share, 0.5)}, "train"):
                if record.split == missing:
                    carved[missing] += 1
                kept.append(record)
        done = kept
    done.sort(key=lambda record: record.key)
    return done, dict(carved)


def dataset_fingerprint(records: Iterable[ImageRecord]) -> str:
    """sha256 over the sorted `key<TAB>version tag` lines of the images: changes with any
    image added, removed or replaced."""
    digest = hashlib.sha256()
    for key, etag in sorted((record.key, record.etag) for record in records):
        digest.update(f"{key}\t{etag}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def discover_dataset(
    db: Store, *, split_seed: int = 0, fractions: SplitFractions | None = None
) -> DatasetIndex:
    """List the database and index every training image (see the module docstring)."""
    listing = list(db.list(""))
    records, ignored = index_images(listing)
    if not records:
        raise DatasetError(
            f"no training images under {db.describe()} "
            "(expected <batch>/<split>/<class>/[images/]*.png or <batch>/<class>/*.png)"
        )
    fingerprint = dataset_fingerprint(records)
    assigned, carved = assign_missing_splits(records, split_seed, fractions)
    return DatasetIndex(
        records=tuple(assigned),
        fingerprint=fingerprint,
        ignored=ignored,
        source=db.describe(),
        carved=carved,
        masks=lesion_masks(info.key for info in listing),
    )


def _is_infection_mask_folder(name: str) -> bool:
    return name.strip().lower().replace("_", " ") == "infection masks"


def lesion_masks(object_keys: Iterable[str]) -> dict[str, str]:
    """Image key -> lesion mask key, for every image with a mask of the same name in the
    `infection masks/` folder beside its `images/` (COVID-QU-Ex)."""
    keys_seen = set(object_keys)
    masks: dict[str, str] = {}
    for key in keys_seen:
        parts = key.split("/")
        if len(parts) >= 2 and _is_infection_mask_folder(parts[-2]):
            image = "/".join([*parts[:-2], _IMAGES_FOLDER, parts[-1]])
            if image in keys_seen:
                masks[image] = key
    return masks
