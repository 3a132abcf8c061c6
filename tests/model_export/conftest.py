"""Session fixtures for the export tests: one model trained on synthetic X-rays, its float32
and bfloat16 exports (each loaded once), and a held-out synthetic test set with pattern masks.

Training and exporting dominate the cost of these tests, so each happens once per session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.model_export.helpers import (
    GRADCAM_LAYER,
    MODEL_NAME,
    RUN_ID,
    TEST_IMAGES_PER_CLASS,
    TEST_SET_SEED,
    HeldOutFilm,
    Trained,
    project_mask,
)
from training_job.config import CLASS_NAMES, get_preset


@pytest.fixture(scope="session")
def trained(demo_model: tuple[Any, dict[str, Any]]) -> Trained:
    model, metrics = demo_model  # shared with the other test folders (tests/conftest.py)
    return Trained(model=model, config=get_preset("small"), metrics=metrics)


@pytest.fixture(scope="session")
def test_films() -> list[HeldOutFilm]:
    from training_job.synthetic import encode_png, generate_xray

    size = get_preset("small").image_size
    films = []
    for class_index, class_name in enumerate(CLASS_NAMES):
        for index in range(TEST_IMAGES_PER_CLASS):
            rng = np.random.default_rng([TEST_SET_SEED, class_index, index])
            film = generate_xray(class_name, rng)
            films.append(
                HeldOutFilm(encode_png(film.image), class_index, project_mask(film.mask, size))
            )
    return films


@pytest.fixture(scope="session")
def float32_export(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_export.export import export_saved_model

    export_dir = tmp_path_factory.mktemp("export") / "float32"
    export_saved_model(
        trained.model,
        trained.config,
        export_dir,
        model_name=MODEL_NAME,
        run_id=RUN_ID,
        gradcam_layer=GRADCAM_LAYER,
        training_metadata={"metrics": {"macro_f1": trained.metrics["macro_f1"]}},
    )
    return export_dir


@pytest.fixture(scope="session")
def float32_loaded(float32_export: Path) -> Any:
    import tensorflow as tf

    return tf.saved_model.load(str(float32_export))


@pytest.fixture(scope="session")
def bfloat16_loaded(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import tensorflow as tf

    from model_export.export import export_saved_model

    export_dir = tmp_path_factory.mktemp("export") / "bfloat16"
    export_saved_model(
        trained.model,
        trained.config,
        export_dir,
        model_name=MODEL_NAME,
        run_id=RUN_ID,
        gradcam_layer=GRADCAM_LAYER,
        compute_dtype="bfloat16",
    )
    return tf.saved_model.load(str(export_dir))
