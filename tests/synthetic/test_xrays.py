"""The synthetic X-ray generator and its writers (folders, stores, CLI)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnn_vit.config import CLASS_NAMES
from storage import Store, keys
from synthetic.xrays import (
    generate_xray,
    main,
    write_covid_qu_ex,
    write_covid_qu_ex_to_store,
    write_samples,
    write_samples_to_store,
)

REPOSITORY = Path(__file__).resolve().parents[2]


def _pattern_columns(mask: np.ndarray) -> np.ndarray:
    return np.nonzero(mask.any(axis=0))[0] / mask.shape[1]


def test_synthetic_module_runs_without_importing_tensorflow(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from synthetic.xrays import main\n"
        f"main(['--out', {str(tmp_path)!r}, '--per-class', '1', '--samples'])\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=True,
    )

    assert completed.stdout.strip().splitlines()[-1] == "False False"


@pytest.mark.parametrize("class_name", CLASS_NAMES)
def test_generate_xray_same_seed_gives_identical_film(class_name: str) -> None:
    first = generate_xray(class_name, 42)
    second = generate_xray(class_name, np.random.default_rng(42))

    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.mask, second.mask)
    assert first.class_name == class_name


def test_generate_xray_different_seeds_give_different_films() -> None:
    first = generate_xray("normal", 1, height=256, width=256)
    second = generate_xray("normal", 2, height=256, width=256)

    assert np.abs(first.image.astype(int) - second.image.astype(int)).mean() > 2


def test_generate_xray_sizes_vary_within_range_and_are_not_always_square() -> None:
    shapes = [generate_xray("covid", seed).image.shape for seed in range(12)]

    assert all(200 <= height <= 320 and 200 <= width <= 320 for height, width in shapes)
    assert any(height != width for height, width in shapes)
    assert len(set(shapes)) > 6


def test_generate_xray_exposure_varies_between_films() -> None:
    means = [generate_xray("normal", seed).image.mean() for seed in range(12)]

    assert max(means) - min(means) > 10


def test_generate_xray_normal_film_has_no_pattern_region() -> None:
    film = generate_xray("normal", 3)

    assert film.image.dtype == np.uint8
    assert film.mask.dtype == np.bool_
    assert film.mask.shape == film.image.shape
    assert not film.mask.any()
    assert film.lung_mask.any()


def test_generate_xray_covid_opacities_are_bilateral_and_inside_the_lungs() -> None:
    for seed in range(8):
        film = generate_xray("covid", seed)
        columns = _pattern_columns(film.mask)

        assert (columns < 0.45).any(), f"seed {seed}: no opacity in the right lung"
        assert (columns > 0.55).any(), f"seed {seed}: no opacity in the left lung"
        assert (film.mask & film.lung_mask).sum() >= 0.9 * film.mask.sum()


def test_generate_xray_covid_opacities_lie_mostly_in_lower_zones() -> None:
    lower_share = []
    for seed in range(12):
        film = generate_xray("covid", seed)
        lung_rows = np.nonzero(film.lung_mask.any(axis=1))[0]
        middle = (lung_rows.min() + lung_rows.max()) / 2
        pattern_rows = np.nonzero(film.mask)[0]
        lower_share.append(np.mean(pattern_rows > middle))

    assert np.mean(lower_share) > 0.6


def test_generate_xray_no_covid_consolidation_is_one_sided_on_either_side() -> None:
    sides = set()
    for seed in range(12):
        film = generate_xray("no-covid", seed)
        columns = _pattern_columns(film.mask)

        assert film.mask.sum() > 0.02 * film.mask.size, f"seed {seed}: consolidation too small"
        one_side = (columns < 0.5).all() or (columns > 0.5).all()
        assert one_side, f"seed {seed}: consolidation crosses the midline"
        sides.add(bool((columns < 0.5).all()))

    assert sides == {True, False}


@pytest.mark.parametrize("class_name", ["covid", "no-covid"])
def test_generate_xray_pattern_region_is_denser_than_in_a_normal_twin(class_name: str) -> None:
    # Same seed, same anatomy draws up to the pattern: the pattern must brighten its region.
    film = generate_xray(class_name, 11, height=256, width=256)
    normal = generate_xray("normal", 11, height=256, width=256)

    inside = film.image[film.mask].astype(float).mean()
    normal_inside = normal.image[film.mask].astype(float).mean()

    assert inside > normal_inside + 10


def test_generate_xray_unknown_class_raises() -> None:
    with pytest.raises(ValueError, match="unknown class"):
        generate_xray("pneumothorax", 0)


def test_write_covid_qu_ex_writes_release_layout_with_lung_masks_beside(tmp_path: Path) -> None:
    counts = {"train": 3, "val": 2, "test": 1}

    written = write_covid_qu_ex(tmp_path, counts, seed=0)

    for split, folder in (("train", "Train"), ("val", "Val"), ("test", "Test")):
        for class_folder in ("COVID-19", "Non-COVID", "Normal"):
            images = sorted((tmp_path / folder / class_folder / "images").glob("*.png"))
            masks = sorted((tmp_path / folder / class_folder / "lung masks").glob("*.png"))
            assert len(images) == counts[split]
            assert 1 <= len(masks) <= counts[split]
    image_records = [item for item in written if item.is_image]
    assert len(image_records) == 3 * (3 + 2 + 1)
    assert all("/images/" in item.path for item in image_records)
    assert all(
        "lung masks" in item.path or "infection masks" in item.path
        for item in written
        if not item.is_image
    )
    # Every film with a class pattern has its lesion mask, named as its image.
    lesions = {
        item.path.replace("infection masks", "images")
        for item in written
        if "infection masks" in item.path
    }
    patterned = {item.path for item in image_records if item.class_name != "normal"}
    assert lesions == patterned
    first = Image.open(tmp_path / image_records[0].path)
    assert first.mode == "L"


def test_write_covid_qu_ex_same_seed_writes_same_bytes(tmp_path: Path) -> None:
    first = write_covid_qu_ex(tmp_path / "a", {"train": 2}, seed=5)
    second = write_covid_qu_ex(tmp_path / "b", {"train": 2}, seed=5)
    other = write_covid_qu_ex(tmp_path / "c", {"train": 2}, seed=6)

    assert [item.data for item in first] == [item.data for item in second]
    assert [item.data for item in first] != [item.data for item in other]


def test_write_covid_qu_ex_plain_layout_uses_canonical_class_folders(tmp_path: Path) -> None:
    write_covid_qu_ex(tmp_path, {"train": 1, "test": 1}, seed=0, layout="plain")

    folders = sorted(str(path.parent.relative_to(tmp_path)) for path in tmp_path.rglob("*.png"))
    assert folders == sorted(
        f"{split}/{name}" for split in ("test", "train") for name in CLASS_NAMES
    )


def test_write_covid_qu_ex_to_store_puts_decodable_pngs_under_prefix(store: Store) -> None:
    prefix = keys.db_prefix("synthetic-1")

    written = write_covid_qu_ex_to_store(store, prefix, {"train": 1, "val": 1}, seed=0)

    stored = store.list_keys(prefix)
    assert sorted(stored) == sorted(prefix + item.path for item in written)
    key = prefix + next(item.path for item in written if item.is_image)
    assert key.startswith("input/db/synthetic-1/Train/")
    image = Image.open(io.BytesIO(store.get_bytes(key)))
    assert image.size[0] >= 200


def test_write_samples_names_files_by_class(tmp_path: Path) -> None:
    paths = write_samples(tmp_path, per_class=2, seed=0)

    names = sorted(path.name for path in paths)
    assert names == sorted(f"{name}_{index:02d}.png" for name in CLASS_NAMES for index in (1, 2))
    assert all(Image.open(path).mode == "L" for path in paths)


def test_write_samples_to_store_writes_the_data_area(store: Store) -> None:
    written = write_samples_to_store(store, per_class=1, seed=0)

    assert sorted(written) == sorted(keys.sample_image(f"{name}_01.png") for name in CLASS_NAMES)
    assert sorted(store.list_keys(keys.DATA_AREA)) == sorted(written)


def test_synthetic_cli_writes_database_with_quarter_sized_val_and_test(tmp_path: Path) -> None:
    exit_code = main(["--out", str(tmp_path), "--per-class", "4", "--seed", "1"])

    assert exit_code == 0
    assert len(list((tmp_path / "Train" / "Normal" / "images").glob("*.png"))) == 4
    assert len(list((tmp_path / "Val" / "COVID-19" / "images").glob("*.png"))) == 1
    assert len(list((tmp_path / "Test" / "Non-COVID" / "images").glob("*.png"))) == 1
