"""Synthetic chest X-rays for tests, demos and local runs (NumPy and Pillow only, no TensorFlow).

Each image is a seeded, reproducible grayscale PA chest film: dark lung fields crossed by ribs,
a bright spine and mediastinum, a heart shadow, diaphragm domes, soft tissue, noise, and varied
size and exposure. Each class adds its own pattern, with natural variation so that a model must
learn the pattern rather than a pixel:

- `normal`: clear lungs;
- `covid`: bilateral, peripheral, hazy (ground-glass) opacities, mostly in the lower zones;
- `no-covid`: a dense consolidation filling part of one lung (lobar pneumonia), bounded by a
  fissure, on either side.

Writers lay the images out as the COVID-QU-Ex release (`<Train|Val|Test>/<COVID-19|Non-COVID|
Normal>/images/*.png`, with a few `lung masks/` beside `images/` that loaders must ignore), as
the plain `<split>/<class>/*.png` layout, or as sample PNGs for `input/data/`, on disk or in a
`storage.Store`.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from cnn_vit.config import CLASS_NAMES

if TYPE_CHECKING:
    from storage import Store

__all__ = [
    "COVID_QU_EX_CLASS_FOLDERS",
    "COVID_QU_EX_SPLIT_FOLDERS",
    "SPLITS",
    "SyntheticFile",
    "SyntheticXray",
    "encode_png",
    "generate_dataset",
    "generate_xray",
    "iter_dataset_files",
    "main",
    "write_covid_qu_ex",
    "write_covid_qu_ex_to_store",
    "write_samples",
    "write_samples_to_store",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
COVID_QU_EX_SPLIT_FOLDERS = {"train": "Train", "val": "Val", "test": "Test"}
COVID_QU_EX_CLASS_FOLDERS = {"normal": "Normal", "covid": "COVID-19", "no-covid": "Non-COVID"}
# Real COVID-QU-Ex folders hold these beside `images/`; loaders must skip them.
_MASK_FOLDER = "lung masks"
_MASKS_PER_FOLDER = 2
# COVID-QU-Ex's lesion masks: written for every film with a class pattern (covid, no-covid).
INFECTION_MASK_FOLDER = "infection masks"

Layout = Literal["covid-qu-ex", "plain"]

FloatImage = npt.NDArray[np.float32]
BoolImage = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class SyntheticXray:
    """One generated film: the uint8 image, where its class pattern lies, and its class."""

    image: npt.NDArray[np.uint8]
    mask: BoolImage
    class_name: str
    lung_mask: BoolImage


@dataclass(frozen=True)
class SyntheticFile:
    """One file of a generated dataset: its path relative to the dataset root."""

    path: str
    split: str
    class_name: str
    data: bytes
    is_image: bool = True


# -- drawing helpers ---------------------------------------------------------------------------


def _smoothstep(edge: float, softness: float, value: FloatImage) -> FloatImage:
    """~1 where value < edge, ~0 where value > edge, blended over `softness`."""
    result = 0.5 - 0.5 * np.tanh((value - edge) / max(softness, 1e-6))
    return result.astype(np.float32)


def _ellipse_distance(
    x: FloatImage, y: FloatImage, cx: float, cy: float, rx: float, ry: float
) -> FloatImage:
    """Normalised elliptic radius: 1 on the ellipse's edge."""
    return np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2).astype(np.float32)


def _blob(
    x: FloatImage, y: FloatImage, cx: float, cy: float, sx: float, sy: float, angle: float
) -> FloatImage:
    """A rotated Gaussian bump with peak 1."""
    cos, sin = np.cos(angle), np.sin(angle)
    u = (x - cx) * cos + (y - cy) * sin
    v = -(x - cx) * sin + (y - cy) * cos
    return np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> FloatImage:
    """Low-frequency texture in [-1, 1]: coarse random grid, bicubically enlarged."""
    grid = rng.uniform(0, 255, (max(2, height // cell), max(2, width // cell))).astype(np.uint8)
    enlarged = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
    return (np.asarray(enlarged, dtype=np.float32) / 127.5 - 1.0).astype(np.float32)


@dataclass(frozen=True)
class _Anatomy:
    """Per-image anatomical layout in normalised coordinates (x in [-1, 1], y in [0, 1])."""

    lung_cx: tuple[float, float]  # right lung (image left), left lung (image right)
    lung_cy: float
    lung_rx: tuple[float, float]
    lung_ry: float
    heart_cx: float
    heart_cy: float
    heart_rx: float
    heart_ry: float
    diaphragm_y: tuple[float, float]


def _random_anatomy(rng: np.random.Generator) -> _Anatomy:
    shift = rng.uniform(-0.05, 0.05)
    lung_cy = rng.uniform(0.47, 0.53)
    lung_ry = rng.uniform(0.29, 0.34)
    return _Anatomy(
        lung_cx=(-0.42 + shift + rng.uniform(-0.03, 0.03), 0.42 + shift + rng.uniform(-0.03, 0.03)),
        lung_cy=lung_cy,
        lung_rx=(rng.uniform(0.25, 0.31), rng.uniform(0.24, 0.30)),
        lung_ry=lung_ry,
        heart_cx=0.12 + shift + rng.uniform(-0.04, 0.04),
        heart_cy=lung_cy + lung_ry * rng.uniform(0.45, 0.65),
        heart_rx=rng.uniform(0.22, 0.30),
        heart_ry=rng.uniform(0.15, 0.20),
        diaphragm_y=(
            lung_cy + lung_ry * rng.uniform(0.78, 0.9),
            lung_cy + lung_ry * rng.uniform(0.82, 0.95),
        ),
    )


def _lung_fields(x: FloatImage, y: FloatImage, anatomy: _Anatomy) -> tuple[FloatImage, FloatImage]:
    """Soft masks of the right and left lung fields (image left and right)."""
    fields = []
    for side in (0, 1):
        distance = _ellipse_distance(
            x, y, anatomy.lung_cx[side], anatomy.lung_cy, anatomy.lung_rx[side], anatomy.lung_ry
        )
        field = _smoothstep(1.0, 0.06, distance)
        # Diaphragm dome: the lung ends at a curved floor, lower laterally (costophrenic angle).
        lateral = np.abs(x - anatomy.lung_cx[side]) / anatomy.lung_rx[side]
        floor = anatomy.diaphragm_y[side] - 0.05 * (1.0 - lateral**2) + 0.04 * lateral
        field *= _smoothstep(0.0, 0.015, y - floor)
        fields.append(field.astype(np.float32))
    return fields[0], fields[1]


def _ribs(rng: np.random.Generator, x: FloatImage, y: FloatImage, anatomy: _Anatomy) -> FloatImage:
    """Posterior ribs: bands that curve down and outwards from the spine, on both sides."""
    ribs = np.zeros_like(x)
    count = int(rng.integers(8, 11))
    top = anatomy.lung_cy - anatomy.lung_ry * 1.05
    spacing = anatomy.lung_ry * 2.0 / count
    thickness = spacing * rng.uniform(0.22, 0.3)
    tilt = rng.uniform(0.18, 0.28)
    for index in range(count):
        start = top + index * spacing
        curve = start + tilt * np.abs(x) ** 1.4 - 0.06 * np.abs(x) ** 3
        band = np.exp(-0.5 * ((y - curve) / thickness) ** 2)
        ribs += band * _smoothstep(0.92, 0.05, np.abs(x))
    return np.clip(ribs, 0.0, 1.0).astype(np.float32)


def _covid_opacities(
    rng: np.random.Generator, x: FloatImage, y: FloatImage, anatomy: _Anatomy
) -> FloatImage:
    """Bilateral peripheral ground-glass: several soft patches along each lung's outer edge."""
    opacity = np.zeros_like(x)
    for side in (0, 1):
        outward = -1.0 if side == 0 else 1.0
        for _ in range(int(rng.integers(2, 5))):
            # Mostly lower zones: vertical position skewed towards the lung base.
            vertical = anatomy.lung_cy + anatomy.lung_ry * (rng.beta(3.0, 1.6) * 1.4 - 0.65)
            lateral = anatomy.lung_cx[side] + outward * anatomy.lung_rx[side] * rng.uniform(
                0.35, 0.8
            )
            size = rng.uniform(0.07, 0.13)
            opacity += rng.uniform(0.55, 1.0) * _blob(
                x, y, lateral, vertical, size, size * rng.uniform(1.0, 1.8), rng.uniform(0, np.pi)
            )
    return np.clip(opacity, 0.0, 1.0).astype(np.float32)


def _lobar_consolidation(
    rng: np.random.Generator,
    x: FloatImage,
    y: FloatImage,
    anatomy: _Anatomy,
    fields: Sequence[FloatImage],
) -> FloatImage:
    """A dense consolidation filling one lobe-like part of one lung, bounded by a fissure."""
    side = int(rng.integers(0, 2))
    cx, rx = anatomy.lung_cx[side], anatomy.lung_rx[side]
    top, bottom = anatomy.lung_cy - anatomy.lung_ry, anatomy.lung_cy + anatomy.lung_ry
    zone = rng.choice(["upper", "middle", "lower"], p=[0.3, 0.25, 0.45])
    # An oblique fissure: a sloped line across the lung; the lobe lies on one side of it.
    slope = rng.uniform(-0.35, 0.35)
    if zone == "upper":
        fissure = top + (bottom - top) * rng.uniform(0.38, 0.55)
        region = _smoothstep(0.0, 0.012, y - (fissure + slope * (x - cx)))
    elif zone == "lower":
        fissure = top + (bottom - top) * rng.uniform(0.42, 0.6)
        region = 1.0 - _smoothstep(0.0, 0.012, y - (fissure + slope * (x - cx)))
    else:
        upper = top + (bottom - top) * rng.uniform(0.3, 0.42)
        lower = top + (bottom - top) * rng.uniform(0.62, 0.75)
        region = (1.0 - _smoothstep(0.0, 0.012, y - upper)) * _smoothstep(0.0, 0.012, y - lower)
    # Not always the whole lobe: a lateral extent from the periphery inwards.
    outward = -1.0 if side == 0 else 1.0
    inner_edge = cx - outward * rx * rng.uniform(0.1, 0.9)
    region *= _smoothstep(0.0, 0.04, -outward * (x - inner_edge))
    texture = 0.85 + 0.15 * _smooth_noise(rng, x.shape[0], x.shape[1], cell=12)
    # Air bronchograms: thin dark branches inside the dense lobe.
    for _ in range(int(rng.integers(1, 4))):
        start_y = rng.uniform(top + 0.1, bottom - 0.1)
        angle = rng.uniform(-0.6, 0.6)
        distance = np.abs((y - start_y) - np.tan(angle) * (x - cx))
        texture -= 0.25 * np.exp(-0.5 * (distance / 0.008) ** 2).astype(np.float32)
    return np.clip(region * fields[side] * texture, 0.0, 1.0).astype(np.float32)


def generate_xray(
    class_name: str,
    rng_or_seed: np.random.Generator | int,
    *,
    height: int | None = None,
    width: int | None = None,
    size_range: tuple[int, int] = (200, 320),
) -> SyntheticXray:
    """One synthetic chest film of `class_name` (one of CLASS_NAMES), reproducible from a seed.

    Height and width are drawn from `size_range` unless given. The returned mask marks where the
    class pattern is (empty for `normal`); `lung_mask` marks the lung fields.
    """
    if class_name not in CLASS_NAMES:
        raise ValueError(f"unknown class {class_name!r}; expected one of {CLASS_NAMES}")
    rng = (
        rng_or_seed
        if isinstance(rng_or_seed, np.random.Generator)
        else np.random.default_rng(rng_or_seed)
    )
    low, high = size_range
    height = int(rng.integers(low, high + 1)) if height is None else height
    width = int(rng.integers(low, high + 1)) if width is None else width

    # Anatomy is smooth, so it is drawn at half resolution and enlarged (four times fewer
    # pixels to shade); noise and blur are then applied at full resolution.
    work_height, work_width = max(8, (height + 1) // 2), max(8, (width + 1) // 2)
    density, pattern, lungs = _draw_chest(class_name, rng, work_height, work_width)

    density_full = np.asarray(
        Image.fromarray(density, mode="F").resize((width, height), Image.Resampling.BICUBIC),
        dtype=np.float32,
    )
    # Acquisition: exposure (gamma and window), quantum noise, detector blur.
    density_full = np.clip(density_full, 0.0, 1.0) ** rng.uniform(0.75, 1.35)
    density_full = rng.uniform(0.0, 0.08) + density_full * rng.uniform(0.8, 1.0)
    density_full += rng.normal(0.0, rng.uniform(0.01, 0.03), density_full.shape).astype(np.float32)
    levels = np.clip(np.rint(density_full * 255.0), 0, 255).astype(np.uint8)
    blurred = Image.fromarray(levels).filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.0)))
    return SyntheticXray(
        image=np.asarray(blurred, dtype=np.uint8),
        mask=_enlarge_mask(pattern, height, width),
        class_name=class_name,
        lung_mask=_enlarge_mask(lungs, height, width),
    )


def _enlarge_mask(mask: BoolImage, height: int, width: int) -> BoolImage:
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((width, height), Image.Resampling.NEAREST)) > 127


def _draw_chest(
    class_name: str, rng: np.random.Generator, height: int, width: int
) -> tuple[FloatImage, BoolImage, BoolImage]:
    """Density image (bright = dense), class-pattern mask and lung mask at the given size."""
    # Normalised coordinates: the chest spans the image width whatever its aspect ratio.
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    cols = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    y = np.broadcast_to(rows, (height, width)).astype(np.float32)
    x = np.broadcast_to(cols, (height, width)).astype(np.float32)
    anatomy = _random_anatomy(rng)

    # Soft tissue: the body outline is bright against the dark air around it.
    body = _smoothstep(1.0, 0.05, _ellipse_distance(x, y, 0.0, 0.55, 0.97, 0.75))
    density = 0.12 + 0.45 * body
    right_lung, left_lung = _lung_fields(x, y, anatomy)
    lungs = np.clip(right_lung + left_lung, 0.0, 1.0)
    density -= 0.36 * lungs * (0.9 + 0.1 * _smooth_noise(rng, height, width, cell=12))
    # Lung markings: faint vessels fanning out from the hila.
    density += 0.05 * lungs * np.clip(_smooth_noise(rng, height, width, cell=3), 0.0, 1.0)
    density += 0.1 * _ribs(rng, x, y, anatomy) * (0.3 + 0.7 * lungs) * body

    # Spine and mediastinum: a bright central column.
    spine_width = rng.uniform(0.09, 0.13)
    density += 0.28 * _smoothstep(spine_width, 0.03, np.abs(x - rng.uniform(-0.02, 0.02))) * body
    heart = _smoothstep(
        1.0,
        0.08,
        _ellipse_distance(
            x, y, anatomy.heart_cx, anatomy.heart_cy, anatomy.heart_rx, anatomy.heart_ry
        ),
    )
    density += 0.3 * heart
    # Below the diaphragm: dense abdomen.
    abdomen = _smoothstep(0.0, 0.03, -(y - max(anatomy.diaphragm_y) - 0.04))
    density += 0.15 * (1.0 - abdomen) * body

    pattern_mask = np.zeros((height, width), dtype=bool)
    if class_name == "covid":
        opacity = _covid_opacities(rng, x, y, anatomy) * lungs
        density += rng.uniform(0.2, 0.3) * opacity
        pattern_mask = opacity > 0.3
    elif class_name == "no-covid":
        consolidation = _lobar_consolidation(rng, x, y, anatomy, (right_lung, left_lung))
        density += rng.uniform(0.32, 0.42) * consolidation
        pattern_mask = consolidation > 0.35
    return density.astype(np.float32), pattern_mask, lungs > 0.5


def encode_png(image: npt.NDArray[np.uint8] | BoolImage) -> bytes:
    """PNG bytes of a grayscale uint8 image (or a bool mask as 0/255)."""
    array = np.asarray(image)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    buffer = io.BytesIO()
    # Fast compression: these files are regenerated at will, speed beats size.
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# -- datasets ----------------------------------------------------------------------------------


def _image_rng(seed: int, split: str, class_name: str, index: int) -> np.random.Generator:
    # Each image has its own stream: adding images or splits never changes existing ones.
    return np.random.default_rng([seed, SPLITS.index(split), CLASS_NAMES.index(class_name), index])


def _split_counts(counts: Mapping[str, int] | int) -> dict[str, int]:
    if isinstance(counts, int):
        return dict.fromkeys(SPLITS, counts)
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected {SPLITS}")
    return {split: int(counts[split]) for split in SPLITS if split in counts}


def generate_dataset(
    counts: Mapping[str, int] | int, seed: int, *, classes: Sequence[str] = CLASS_NAMES
) -> Iterator[tuple[str, int, SyntheticXray]]:
    """(split, index, film) for `counts[split]` films of every class, deterministic in `seed`.

    `counts` is images per class, per split (`{"train": 100, "val": 20, "test": 20}`), or one
    number for every split.
    """
    for split, count in _split_counts(counts).items():
        for class_name in classes:
            for index in range(count):
                yield (
                    split,
                    index,
                    generate_xray(class_name, _image_rng(seed, split, class_name, index)),
                )


def iter_dataset_files(
    counts: Mapping[str, int] | int,
    seed: int,
    *,
    layout: Layout = "covid-qu-ex",
    classes: Sequence[str] = CLASS_NAMES,
) -> Iterator[SyntheticFile]:
    """The files of a synthetic image database, with paths relative to its root.

    `covid-qu-ex`: `Train/COVID-19/images/covid_00001.png`, plus the first few films' lung masks
    in `Train/COVID-19/lung masks/` and every patterned film's lesion mask in
    `Train/COVID-19/infection masks/` (not training images; the training job measures
    explanations against the latter). `plain`: `train/covid/covid_00001.png`.
    """
    for split, index, film in generate_dataset(counts, seed, classes=classes):
        stem = f"{film.class_name.replace('-', '_')}_{index + 1:05d}.png"
        if layout == "covid-qu-ex":
            folder = (
                f"{COVID_QU_EX_SPLIT_FOLDERS[split]}/{COVID_QU_EX_CLASS_FOLDERS[film.class_name]}"
            )
            yield SyntheticFile(
                f"{folder}/images/{stem}", split, film.class_name, encode_png(film.image)
            )
            if film.mask.any():
                yield SyntheticFile(
                    f"{folder}/{INFECTION_MASK_FOLDER}/{stem}",
                    split,
                    film.class_name,
                    encode_png(film.mask),
                    is_image=False,
                )
            if index < _MASKS_PER_FOLDER:
                yield SyntheticFile(
                    f"{folder}/{_MASK_FOLDER}/{stem}",
                    split,
                    film.class_name,
                    encode_png(film.lung_mask),
                    is_image=False,
                )
        elif layout == "plain":
            yield SyntheticFile(
                f"{split}/{film.class_name}/{stem}", split, film.class_name, encode_png(film.image)
            )
        else:
            raise ValueError(f"unknown layout {layout!r}")


def write_covid_qu_ex(
    folder: str | Path,
    counts: Mapping[str, int] | int,
    seed: int = 0,
    *,
    layout: Layout = "covid-qu-ex",
    classes: Sequence[str] = CLASS_NAMES,
) -> list[SyntheticFile]:
    """Write a synthetic image database under `folder`; returns what was written."""
    root = Path(folder)
    written = []
    for item in iter_dataset_files(counts, seed, layout=layout, classes=classes):
        path = root / item.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.data)
        written.append(item)
    return written


def write_covid_qu_ex_to_store(
    store: Store,
    prefix: str,
    counts: Mapping[str, int] | int,
    seed: int = 0,
    *,
    layout: Layout = "covid-qu-ex",
    classes: Sequence[str] = CLASS_NAMES,
) -> list[SyntheticFile]:
    """Write a synthetic image database into `store` under `prefix` (e.g. `keys.db_prefix("b1")`).

    Returned paths are relative to `prefix`.
    """
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    written = []
    for item in iter_dataset_files(counts, seed, layout=layout, classes=classes):
        store.put(prefix + item.path, item.data, content_type="image/png")
        written.append(item)
    return written


def _sample_files(per_class: int, seed: int) -> Iterator[tuple[str, bytes]]:
    for class_name in CLASS_NAMES:
        for index in range(per_class):
            # Samples come from their own stream (split "test"), far from small training sets.
            film = generate_xray(class_name, _image_rng(seed, "test", class_name, 10_000 + index))
            yield f"{class_name}_{index + 1:02d}.png", encode_png(film.image)


def write_samples(folder: str | Path, per_class: int = 2, seed: int = 0) -> list[Path]:
    """Sample PNGs for trying the API (`covid_01.png`, `no-covid_01.png`, `normal_01.png`...)."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in _sample_files(per_class, seed):
        path = root / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def write_samples_to_store(store: Store, per_class: int = 2, seed: int = 0) -> list[str]:
    """Sample PNGs written to the store's `input/data/` area; returns their keys."""
    from storage import keys

    written = []
    for name, data in _sample_files(per_class, seed):
        key = keys.sample_image(name)
        store.put(key, data, content_type="image/png")
        written.append(key)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write a synthetic image database (or sample PNGs) to a folder."""
    parser = argparse.ArgumentParser(prog="xray-synthetic", description=main.__doc__)
    parser.add_argument("--out", required=True, type=Path, help="folder to write into")
    parser.add_argument(
        "--per-class",
        type=int,
        default=100,
        help="training images per class (default 100); Val and Test get a quarter as many "
        "(at least 1); with --samples, sample images per class",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=["covid-qu-ex", "plain"], default="covid-qu-ex")
    parser.add_argument(
        "--samples", action="store_true", help="write sample PNGs for input/data/ instead"
    )
    args = parser.parse_args(argv)
    if args.per_class < 1:
        parser.error("--per-class must be at least 1")
    if args.samples:
        paths = write_samples(args.out, args.per_class, args.seed)
        print(f"wrote {len(paths)} sample images to {args.out}")
        return 0
    evaluation = max(1, args.per_class // 4)
    counts = {"train": args.per_class, "val": evaluation, "test": evaluation}
    written = write_covid_qu_ex(args.out, counts, args.seed, layout=args.layout)
    images = sum(item.is_image for item in written)
    print(f"wrote {images} images ({args.layout} layout, {counts} per class) to {args.out}")
    return 0
