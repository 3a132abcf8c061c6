"""Training from DICOM: `.dcm` files in the database are found like PNGs, converted by the same
code the functions use, so the model trains on exactly the pixels it will be served (issue 20)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnn_vit.preprocessing import decode_grayscale
from functions.dicom import read_dicom, uid_key
from storage import LocalStore, S3Store, Store, keys
from synthetic.xrays import encode_png, generate_xray
from tests.functions.sample_dicom import CT, dataset, scaled, to_bytes
from training_job.discovery import discover_dataset
from training_job.image_cache import ImageCache
from training_job.pipeline import find_unreadable

_WINDOW = {"WindowCenter": 2048, "WindowWidth": 3000}


def _dicom(seed: int, *, monochrome1: bool) -> bytes:
    """A 12-bit DX film with a window; MONOCHROME1 stores it inverted, as such detectors do."""
    image = generate_xray("covid", seed, height=72, width=64).image
    pixels = scaled(image, 12)
    if monochrome1:
        pixels = (4095 - pixels).astype(np.uint16)
    photometric = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    return to_bytes(dataset(pixels, bits_stored=12, photometric=photometric, extra=_WINDOW))


def _database(store: Store) -> dict[str, bytes]:
    """A small COVID-QU-Ex batch mixing PNG and DICOM films, and a CT slice that must not train."""
    db = store.child(keys.DB_AREA)
    files: dict[str, bytes] = {}
    for index, split in enumerate(("Train", "Train", "Val", "Test")):
        folder = f"b1/{split}/COVID-19/images"
        files[f"{folder}/film-{index}.png"] = encode_png(
            generate_xray("covid", 100 + index, height=72, width=64).image
        )
        files[f"{folder}/film-{index}.dcm"] = _dicom(index, monochrome1=index % 2 == 0)
    for split in ("Train", "Val", "Test"):
        files[f"b1/{split}/Normal/images/normal.png"] = encode_png(
            generate_xray("normal", 7, height=72, width=64).image
        )
    ct = dataset(scaled(generate_xray("covid", 9, height=72, width=64).image, 12), modality="CT")
    ct.SOPClassUID = CT
    ct.file_meta.MediaStorageSOPClassUID = CT
    files["b1/Train/COVID-19/images/slice.dcm"] = to_bytes(ct)
    for key, data in files.items():
        db.put(key, data)
    return files


def _served_png(data: bytes) -> bytes:
    """The PNG the predict function hands the model for this DICOM upload."""
    upload = read_dicom(data, max_bytes=len(data), max_pixels=50_000_000, key=uid_key("k" * 40))
    return upload.image.data


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_training_reads_dicom_as_the_functions_convert_it(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store: Store = (
        LocalStore(tmp_path / "store")
        if backend == "local"
        else request.getfixturevalue("s3_store")
    )
    assert isinstance(store, LocalStore | S3Store)
    files = _database(store)
    db = store.child(keys.DB_AREA)
    index = discover_dataset(db)
    found = {record.key: record for record in index.records}
    dicom_keys = sorted(key for key in files if key.endswith(".dcm"))
    assert set(dicom_keys) <= set(found)  # found like PNGs, in the same layout
    assert {found[key].class_name for key in dicom_keys} == {"covid"}

    cache = ImageCache(tmp_path / "cache", db)
    local = cache.synchronise(index.records)
    unreadable = local.unreadable(index.records, find_unreadable)
    assert unreadable == ["b1/Train/COVID-19/images/slice.dcm"]  # refused, like a corrupt PNG

    for key in dicom_keys:
        if key in unreadable:
            continue
        converted = local.path(key)
        assert converted.suffix == ".png"
        # Byte for byte the PNG serving gives the model, so the same in-graph preprocessing
        # sees the same pixels in training and serving.
        assert converted.read_bytes() == _served_png(files[key])
        decoded = decode_grayscale(converted.read_bytes()).numpy()[..., 0]
        assert decoded.shape == (72, 64)
    # MONOCHROME1 came out the right way round: the same film stored both ways reads alike.
    one = decode_grayscale(local.path("b1/Train/COVID-19/images/film-0.dcm").read_bytes())
    assert float(np.mean(one)) > 0  # not blank
    straight = decode_grayscale(_served_png(_dicom(0, monochrome1=False))).numpy()
    assert np.abs(one.numpy().astype(np.int32) - straight.astype(np.int32)).max() <= 1

    # A rerun converts nothing again (one PNG per version tag), and a replaced file is redone.
    mtimes = {key: local.path(key).stat().st_mtime_ns for key in dicom_keys[:2]}
    again = cache.synchronise(discover_dataset(db).records)
    assert {key: again.path(key).stat().st_mtime_ns for key in mtimes} == mtimes
    replaced = dicom_keys[0]
    db.put(replaced, _dicom(42, monochrome1=False))
    third = cache.synchronise(discover_dataset(db).records)
    assert third.path(replaced).read_bytes() == _served_png(_dicom(42, monochrome1=False))
    assert len(list((cache.folder / "converted").rglob("*.png"))) == len(dicom_keys) - 1
