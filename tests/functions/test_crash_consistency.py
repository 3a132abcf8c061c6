"""Kill -9 at any point of a write path, hundreds of times: a forked child writes in a loop (the
real InferenceService storing predictions and Grad-CAM overlays, or the real ModelRegistry
publishing, promoting and rolling back) on a local store, and is killed by SIGKILL after a
random few milliseconds. After every kill the store is checked: every visible object complete
and parseable, no record without its overlay (an overlay without its record is what the design
allows: the overlay is written first), the registry always valid and naming only complete
versions. A fixed number of kills; the model client is an in-process stand-in (the write path
is what is under test, not the HTTP call before it)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from functions.images import validate_image
from functions.inference import InferenceService
from functions.serving_client import GradcamAnswer, Prediction
from model_contract import InvalidPromotion, NothingToRollBack
from model_contract.documents import Manifest, RegistryDocument
from model_contract.identity import ModelIdentity
from model_contract.registry import ModelRegistry
from storage import LocalStore, keys
from tests.functions.sample_images import png_bytes

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

# A fixed number of kills per write path, not a time budget: a slow machine (CI) runs the same
# test, only for longer. The deadline only stops a writer that hangs.
INFERENCE_KILLS = 150
REGISTRY_KILLS = 100
DEADLINE_SECONDS = 120.0
CLASSES = ("normal", "covid", "no-covid")
MODEL = "cnn_vit"


class _Model:
    """Answers like the model client, in-process."""

    def __init__(self) -> None:
        self.identity = ModelIdentity(name=MODEL, version=3, run_id="20261127T101500Z-ab12cd")
        noise = Image.effect_noise((256, 256), 64).convert("RGB")
        buffer = io.BytesIO()
        noise.save(buffer, format="PNG")  # about 190 kB: a kill often lands inside its write
        self.overlay = buffer.getvalue()

    def _prediction(self) -> Prediction:
        return Prediction(CLASSES, (0.1, 0.8, 0.1), 1, self.identity)

    def predict(self, images: list[bytes]) -> list[Prediction]:
        return [self._prediction() for _ in images]

    def gradcam(self, image: bytes, index: int | None, *, with_heatmap: bool) -> GradcamAnswer:
        del image, with_heatmap
        return GradcamAnswer(self._prediction(), 1 if index is None else index, self.overlay, 256)


def _inference_loop(root: Path) -> Callable[[], None]:
    """The writer, set up before the fork so that the child starts writing at once."""
    service = InferenceService(LocalStore(root), _Model())  # type: ignore[arg-type]
    image = validate_image(png_bytes(), "image/png", max_bytes=1 << 20, max_pixels=1 << 20)
    return lambda: _write_inferences(service, image)


def _write_inferences(service: InferenceService, image: Any) -> None:
    for index in range(1_000_000):
        user = str(1 + index % 3)
        if index % 2:
            service.gradcam(user, image, None, time.perf_counter())
        else:
            service.predict(user, image, time.perf_counter())


def _export(folder: Path) -> Path:
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(os.urandom(150_000))
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(50_000))
    (folder / "variables" / "variables.index").write_bytes(os.urandom(1_000))
    (folder / "assets").mkdir()
    identity = ModelIdentity(name=MODEL, version=0, run_id="20261207T000000Z-abcdef")
    (folder / "assets" / "model_identity.txt").write_text(identity.to_text())
    return folder


def _registry_loop(root: Path, export: Path) -> Callable[[], None]:
    registry = ModelRegistry(LocalStore(root), MODEL, sleep=lambda _: None)
    return lambda: _change_registry(registry, export)


def _change_registry(registry: ModelRegistry, export: Path) -> None:
    for index in range(1_000_000):
        version = registry.publish(
            export,
            run_id=f"20261207T{index % 240000:06d}Z-abcdef",
            metrics={"macro_f1": 0.5},
            dataset_fingerprint="sha256:" + "0" * 64,
            parent_version=None,
            preset="small",
        )
        registry.promote(version)
        if index % 3 == 2:
            with contextlib.suppress(NothingToRollBack):
                registry.rollback()
        if index % 4 == 3:
            with contextlib.suppress(InvalidPromotion):  # the version is stable again
                registry.promote(version, "canary")


def _kill_loop(
    loop: Callable[[], None], check: Callable[[], None], max_delay: float, wanted: int
) -> int:
    """Fork the writer, kill it after a random moment, check the store, `wanted` times; returns
    the kills."""
    rng = random.Random(20261207)
    deadline = time.monotonic() + DEADLINE_SECONDS
    kills = 0
    while kills < wanted and time.monotonic() < deadline:
        pid = os.fork()
        if pid == 0:  # the child: write until killed
            code = 0
            try:
                loop()
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        time.sleep(rng.uniform(0.001, max_delay))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), "the writer ended by itself: it failed"
        kills += 1
        check()
    return kills


def _check_inference_store(root: Path, checked: dict[str, str]) -> tuple[int, int, int]:
    """(records, Grad-CAM records, overlays) after checking them all. Objects are create-only:
    those in `checked` (key -> kind) were whole before and are not read again."""
    store = LocalStore(root)
    overlay_keys = set()
    for info in store.list(keys.GRAD_CAM_AREA):
        if info.key not in checked:
            with Image.open(io.BytesIO(store.get_bytes(info.key))) as overlay:
                overlay.verify()  # every chunk there, every checksum right
            checked[info.key] = "overlay"
        overlay_keys.add(info.key)
    kinds = []
    for info in store.list(keys.INFERENCE_AREA):
        if info.key not in checked:
            record = json.loads(store.get_bytes(info.key))
            assert info.key == keys.inference_record(record["user_id"], record["id"])
            assert record["probabilities"] == {"normal": 0.1, "covid": 0.8, "no-covid": 0.1}
            if record["kind"] == "gradcam":
                # Written after its overlay: a record never stands without it.
                assert keys.gradcam_image(record["user_id"], record["id"]) in overlay_keys
            checked[info.key] = record["kind"]
        kinds.append(checked[info.key])
    return len(kinds), kinds.count("gradcam"), len(overlay_keys)


def _check_registry_store(root: Path, checked: set[int]) -> int:
    """How many versions the registry holds, after checking it (versions in `checked` were
    complete before: a complete version never changes)."""
    store = LocalStore(root)
    key = keys.model_registry(MODEL)
    if not store.exists(key):
        return 0
    registry = RegistryDocument.decode(store.get_bytes(key), MODEL)
    for version in registry.versions:
        if int(version) in checked:
            continue
        # A registered version is complete: its manifest lists files that are all there, whole.
        manifest = Manifest.decode(
            store.get_bytes(keys.model_version_manifest(MODEL, int(version))), MODEL, int(version)
        )
        prefix = keys.model_version_prefix(MODEL, int(version))
        for entry in manifest.files:
            assert len(store.get_bytes(prefix + entry.path)) == entry.size
        checked.add(int(version))
    for label in (registry.stable, registry.canary):
        assert label is None or str(label) in {str(version) for version in registry.versions}
    return len(registry.versions)


@pytest.mark.slow
def test_kill_9_anywhere_in_the_inference_write_path_leaves_a_whole_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    seen: list[tuple[int, int, int]] = []
    checked: dict[str, str] = {}

    kills = _kill_loop(
        _inference_loop(root),
        lambda: seen.append(_check_inference_store(root, checked)),
        0.03,
        INFERENCE_KILLS,
    )

    records, gradcams, overlays = seen[-1]
    assert kills == INFERENCE_KILLS
    assert gradcams > 20, "the writer must have written between the kills"
    assert records > gradcams
    assert overlays >= gradcams  # the difference: overlays whose record a kill prevented


@pytest.mark.slow
def test_kill_9_anywhere_in_a_registry_change_leaves_it_valid(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    export = _export(tmp_path / "export")
    versions: list[int] = []
    checked: set[int] = set()

    kills = _kill_loop(
        _registry_loop(root, export),
        lambda: versions.append(_check_registry_store(root, checked)),
        0.12,
        REGISTRY_KILLS,
    )

    assert kills == REGISTRY_KILLS
    assert versions[-1] > 10, "the writer must have published between the kills"


def test_kill_checks_catch_a_torn_record(tmp_path: Path) -> None:
    # The check itself can fail: a record cut in half is caught.
    root = tmp_path / "store"
    store = LocalStore(root)
    moment = datetime(2026, 12, 7, tzinfo=UTC)
    inference_id = keys.new_inference_id(moment)
    store.put(keys.inference_record("1", inference_id), b'{"schema": 1, "id": "')

    with pytest.raises(json.JSONDecodeError):
        _check_inference_store(root, {})
