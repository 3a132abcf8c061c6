"""Images that are not frontal chest X-rays, to measure the model's out-of-distribution refusal.

Every kind is generated here, cut from images shipped inside an installed package (the sample
data matplotlib bundles: a photograph, a picture with text, an MRI slice) or made from the
caller's own chest films (turned, or cut to a strip), so nothing is downloaded. Kinds:

- `noise`: uniform or Gaussian noise, grey or colour;
- `flat`: one grey level, or nearly (faint noise or a faint gradient);
- `photo`: crops of the bundled photographs, in colour and turned grey (the grey ones are the
  hard case: only the model's features can tell them);
- `drawing`: shapes, lines and text drawn on a plain background;
- `turned_film`: one of the given chest films upside down, on its side, or flipped top to
  bottom;
- `hand`, `skull`: synthetic radiographs of other body parts (bone over soft tissue, as an
  X-ray shows them);
- `mri`: the bundled MRI slice of a head, turned and cropped;
- `wide`: one of the given chest films cut to an extreme aspect ratio (4:1 or 1:4).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

__all__ = ["NOT_CHEST_KINDS", "generate_not_chest", "not_chest_images"]

Uint8 = npt.NDArray[np.uint8]


def encode_png(image: Uint8) -> bytes:
    return _png(Image.fromarray(image))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _sample(name: str) -> Image.Image:
    with Image.open(_sample_path(name)) as image:
        image.load()
        return image.copy()


def _noise(rng: np.random.Generator, size: int) -> bytes:
    colour = rng.random() < 0.5
    shape = (size, size, 3) if colour else (size, size)
    if rng.random() < 0.5:
        values = rng.integers(0, 256, shape)
    else:
        values = np.clip(rng.normal(128, rng.uniform(20, 80), shape), 0, 255)
    return _png(Image.fromarray(values.astype(np.uint8)))


def _flat(rng: np.random.Generator, size: int) -> bytes:
    level = float(rng.uniform(0, 255))
    image = np.full((size, size), level)
    choice = rng.integers(3)
    if choice == 1:
        image += rng.normal(0, 1.5, image.shape)
    elif choice == 2:
        image += np.linspace(0, rng.uniform(-6, 6), size)[None, :]
    return _png(Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)))


def _photo(rng: np.random.Generator, size: int) -> bytes:
    source = _sample(("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")[rng.integers(2)])
    source = source.convert("RGB")
    width, height = source.size
    side = int(min(width, height) * rng.uniform(0.5, 1.0))
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    crop = source.crop((left, top, left + side, top + side)).resize((size, size))
    if rng.random() < 0.5:
        crop = crop.convert("L")
    return _png(crop)


def _drawing(rng: np.random.Generator, size: int) -> bytes:
    background = int(rng.choice([0, 255, int(rng.integers(0, 256))]))
    image = Image.new("L", (size, size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 12))):
        box = sorted(rng.integers(0, size, 2).tolist()), sorted(rng.integers(0, size, 2).tolist())
        shape = (box[0][0], box[1][0], box[0][1] + 2, box[1][1] + 2)
        fill = int(rng.integers(0, 256))
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle(shape, outline=fill, width=int(rng.integers(1, 5)))
        elif kind == 1:
            draw.ellipse(shape, fill=fill)
        else:
            draw.line(shape, fill=fill, width=int(rng.integers(1, 8)))
    draw.text((size // 8, size // 2), "not a chest film", fill=255 - background)
    return _png(image)


def _turned_film(film: Uint8, rng: np.random.Generator) -> bytes:
    turn = int(rng.integers(4))
    turned = np.flipud(film) if turn == 0 else np.rot90(film, k=turn)
    return encode_png(np.ascontiguousarray(turned))


def _soft(image: npt.NDArray[np.float64], rng: np.random.Generator) -> bytes:
    noisy = image + rng.normal(0, 0.02, image.shape)
    return encode_png(np.clip(noisy * 255, 0, 255).astype(np.uint8))


def _hand(rng: np.random.Generator, size: int) -> bytes:
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), 0.08)
    tissue = np.zeros_like(image)
    bone = np.zeros_like(image)
    palm_x, palm_y = rng.uniform(0.42, 0.58), rng.uniform(0.62, 0.72)
    tissue[((x - palm_x) / 0.2) ** 2 + ((y - palm_y) / 0.17) ** 2 < 1] = 0.35
    for finger in range(5):
        angle = np.deg2rad(-40 + finger * 20 + rng.uniform(-5, 5))
        length = rng.uniform(0.3, 0.42) * (0.7 if finger in (0, 4) else 1.0)
        base_x = palm_x + 0.17 * np.sin(angle)
        base_y = palm_y - 0.12 * np.cos(angle)
        for step in np.linspace(0, 1, 60):
            cx = base_x + length * step * np.sin(angle)
            cy = base_y - length * step * np.cos(angle)
            near = (x - cx) ** 2 + (y - cy) ** 2
            tissue[near < 0.035**2] = 0.35
            # Phalanges: bone with gaps at the joints.
            if (step * 3) % 1 > 0.12:
                bone[near < 0.016**2] = 0.5
    for ray in range(5):  # metacarpals
        angle = np.deg2rad(-30 + ray * 15)
        for step in np.linspace(0, 1, 40):
            cx = palm_x + 0.15 * step * np.sin(angle)
            cy = palm_y + 0.1 - 0.2 * step * np.cos(angle)
            bone[(x - cx) ** 2 + (y - cy) ** 2 < 0.014**2] = 0.5
    return _soft(image + tissue + bone, rng)


def _skull(rng: np.random.Generator, size: int) -> bytes:
    y, x = np.mgrid[0:size, 0:size] / size
    cx, cy = rng.uniform(0.45, 0.55), rng.uniform(0.42, 0.5)
    rx, ry = rng.uniform(0.3, 0.36), rng.uniform(0.36, 0.42)
    radius = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    image = np.full((size, size), 0.05)
    image[radius < 1.0] = 0.3  # brain
    image[(radius >= 0.9) & (radius < 1.0)] = 0.85  # the vault
    orbit = rng.uniform(0.1, 0.14)
    for side in (-1, 1):
        image[((x - cx - side * orbit) / 0.07) ** 2 + ((y - cy - 0.05) / 0.06) ** 2 < 1] = 0.15
    jaw = ((x - cx) / (rx * 0.8)) ** 2 + ((y - cy - ry * 0.95) / 0.12) ** 2
    image[(jaw > 0.7) & (jaw < 1.0) & (y > cy + ry * 0.8)] = 0.8
    return _soft(image, rng)


def _mri(rng: np.random.Generator, size: int) -> bytes:
    with gzip.open(_sample_path("s1045.ima.gz")) as handle:
        raw = np.frombuffer(handle.read(), np.uint16).reshape(256, 256)
    scaled = (raw.astype(np.float64) / max(1, raw.max()) * 255).astype(np.uint8)
    image = Image.fromarray(np.rot90(scaled, k=int(rng.integers(4))).copy())
    if rng.random() < 0.5:
        edge = int(rng.integers(0, 64))
        image = image.crop((edge, edge, 256 - edge // 2, 256 - edge // 2))
    return _png(image.resize((size, size)))


def _sample_path(name: str) -> str:
    from matplotlib import cbook

    return str(cbook.get_sample_data(name, asfileobj=False))


def _wide(film: Uint8, rng: np.random.Generator) -> bytes:
    height, width = film.shape
    if rng.random() < 0.5:
        band = film[height // 2 - height // 8 : height // 2 + height // 8, :]
    else:
        band = film[:, width // 2 - width // 8 : width // 2 + width // 8]
    return encode_png(np.ascontiguousarray(band))


_MAKERS: dict[str, Callable[[np.random.Generator, int], bytes]] = {
    "noise": _noise,
    "flat": _flat,
    "photo": _photo,
    "drawing": _drawing,
    "hand": _hand,
    "skull": _skull,
    "mri": _mri,
}
_FROM_FILMS: dict[str, Callable[[Uint8, np.random.Generator], bytes]] = {
    "turned_film": _turned_film,
    "wide": _wide,
}
NOT_CHEST_KINDS: tuple[str, ...] = (*_MAKERS, *_FROM_FILMS)


def generate_not_chest(
    kind: str, rng: np.random.Generator, size: int = 256, film: Uint8 | None = None
) -> bytes:
    """One encoded image (PNG) of `kind` that is not a frontal chest X-ray; the kinds made
    from a chest film need `film` (uint8 grey [H, W])."""
    if kind in _FROM_FILMS:
        if film is None:
            raise ValueError(f"{kind} images are made from a chest film: pass one")
        return _FROM_FILMS[kind](np.asarray(film, np.uint8), rng)
    if kind not in _MAKERS:
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(NOT_CHEST_KINDS)}")
    return _MAKERS[kind](rng, size)


def not_chest_images(
    per_kind: int, seed: int, films: Sequence[Uint8], size: int = 256
) -> Iterator[tuple[str, bytes]]:
    """(kind, PNG) for `per_kind` images of every kind, deterministic in `seed` and `films`
    (chest films, grey uint8; the kinds made from films skip when there are none)."""
    for number, kind in enumerate(NOT_CHEST_KINDS):
        if kind in _FROM_FILMS and not films:
            continue
        for index in range(per_kind):
            rng = np.random.default_rng([seed, number, index])
            film = films[index % len(films)] if kind in _FROM_FILMS else None
            yield kind, generate_not_chest(kind, rng, size, film)
