"""The exported SavedModel, reloaded: signatures as docs/CONTRACTS.md, parity with training-side
preprocessing, the identity asset, model info, warmup records and the bfloat16 twin."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from cnn_vit.config import CLASS_NAMES, get_preset
from cnn_vit.gradcam import blend_overlay, upsample_heatmap
from cnn_vit.model import build_model
from cnn_vit.preprocessing import equalized_batch, preprocess_batch
from model_contract.artifact import MODEL_INFO_PATH, WARMUP_PATH, read_model_info
from model_contract.identity import IDENTITY_ASSET_PATH, ModelIdentity
from model_export.export import MAX_OVERLAY_SIZE, default_overlay_size, export_saved_model
from model_export.warmup import read_warmup_records
from tests.trained_models import (
    GRADCAM_LAYER,
    MODEL_NAME,
    RUN_ID,
    HeldOutFilm,
    Trained,
    fitted_ood_check,
)

SIZE = 64  # the small preset's input size
OVERLAY_SIZE = 256  # its default overlay size: max(SIZE, 256)
PREDICTION_OUTPUTS = {
    "probabilities": (types_pb2.DT_FLOAT, [-1, 3]),
    "class_index": (types_pb2.DT_INT32, [-1]),
    "class_name": (types_pb2.DT_STRING, [-1]),
    "class_names": (types_pb2.DT_STRING, [-1, 3]),
    "model_name": (types_pb2.DT_STRING, [-1]),
    "model_version": (types_pb2.DT_INT64, [-1]),
    "model_run_id": (types_pb2.DT_STRING, [-1]),
    "refer_threshold": (types_pb2.DT_FLOAT, [-1]),
    "ood_score": (types_pb2.DT_FLOAT, [-1]),
    "ood_reason": (types_pb2.DT_STRING, [-1]),
}
GRADCAM_INPUTS = {
    "image_bytes": (types_pb2.DT_STRING, [-1]),
    "target_class": (types_pb2.DT_INT32, [-1]),
}
OVERLAY_OUTPUTS = {
    **PREDICTION_OUTPUTS,
    "overlay_png_bytes": (types_pb2.DT_STRING, [-1]),
    "target_class_index": (types_pb2.DT_INT32, [-1]),
}
CONTRACT = {
    "serving_default": (
        {"image_bytes": (types_pb2.DT_STRING, [-1])},
        PREDICTION_OUTPUTS,
    ),
    "gradcam": (
        GRADCAM_INPUTS,
        {**OVERLAY_OUTPUTS, "heatmap": (types_pb2.DT_FLOAT, [-1, SIZE, SIZE])},
    ),
    # The same Grad-CAM without the heatmap, for callers that only show the overlay.
    "gradcam_overlay": (GRADCAM_INPUTS, OVERLAY_OUTPUTS),
}


def _signature_table(tensors: Any) -> dict[str, tuple[int, list[int]]]:
    return {
        name: (info.dtype, [dim.size for dim in info.tensor_shape.dim])
        for name, info in tensors.items()
    }


def _pngs(films: list[HeldOutFilm]) -> tf.Tensor:
    return tf.constant([film.png for film in films])


def _one_per_class(films: list[HeldOutFilm]) -> list[HeldOutFilm]:
    return [next(film for film in films if film.class_index == index) for index in range(3)]


def test_export_signature_defs_match_the_contract(float32_export: Path) -> None:
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((float32_export / "saved_model.pb").read_bytes())
    signatures = saved_model.meta_graphs[0].signature_def

    assert set(CONTRACT) <= set(signatures)
    for name, (inputs, outputs) in CONTRACT.items():
        assert signatures[name].method_name == "tensorflow/serving/predict"
        assert _signature_table(signatures[name].inputs) == inputs
        assert _signature_table(signatures[name].outputs) == outputs


def test_serving_default_matches_keras_on_training_preprocessing(
    trained: Trained, float32_loaded: Any, test_films: list[HeldOutFilm]
) -> None:
    films = test_films[::10]
    images = preprocess_batch(_pngs(films), trained.config.image_size)
    expected = trained.model(images, training=False).numpy()

    answer = float32_loaded.signatures["serving_default"](image_bytes=_pngs(films))

    np.testing.assert_allclose(answer["probabilities"].numpy(), expected, atol=1e-5)
    assert answer["class_index"].numpy().tolist() == expected.argmax(axis=1).tolist()
    names = [CLASS_NAMES[index] for index in expected.argmax(axis=1)]
    assert [name.decode() for name in answer["class_name"].numpy()] == names
    assert answer["class_names"].numpy().tolist() == [[n.encode() for n in CLASS_NAMES]] * len(
        films
    )
    assert set(answer["model_name"].numpy().tolist()) == {MODEL_NAME.encode()}
    assert set(answer["model_version"].numpy().tolist()) == {0}
    assert set(answer["model_run_id"].numpy().tolist()) == {RUN_ID.encode()}


def test_gradcam_signature_returns_heatmap_overlay_and_requested_class(
    float32_loaded: Any, test_films: list[HeldOutFilm]
) -> None:
    films = _one_per_class(test_films)
    predicted = float32_loaded.signatures["serving_default"](image_bytes=_pngs(films))

    answer = float32_loaded.signatures["gradcam"](
        image_bytes=_pngs(films), target_class=tf.constant([-1, 0, 2], tf.int32)
    )

    heatmap = answer["heatmap"].numpy()
    assert heatmap.shape == (3, SIZE, SIZE)
    assert heatmap.min() >= 0.0
    assert heatmap.max() <= 1.0
    expected_targets = [int(predicted["class_index"][0]), 0, 2]
    assert answer["target_class_index"].numpy().tolist() == expected_targets
    np.testing.assert_allclose(
        answer["probabilities"].numpy(), predicted["probabilities"].numpy(), atol=1e-5
    )
    for png in answer["overlay_png_bytes"].numpy():
        overlay = tf.io.decode_png(png).numpy()
        assert overlay.shape == (OVERLAY_SIZE, OVERLAY_SIZE, 3)
        assert overlay.dtype == np.uint8


def test_gradcam_overlay_is_the_display_size_film_with_the_heatmap_upsampled(
    float32_loaded: Any, test_films: list[HeldOutFilm]
) -> None:
    films = _one_per_class(test_films)
    answer = float32_loaded.signatures["gradcam"](
        image_bytes=_pngs(films), target_class=tf.constant([-1, 0, 2], tf.int32)
    )

    # The shared preprocessing at the display size (what the model saw, larger) under the
    # heatmap upsampled to it. The exported layer's map is S x S on this preset, so upsampling
    # the S x S heatmap output is upsampling the layer's map.
    film = equalized_batch(_pngs(films), OVERLAY_SIZE)
    heat = upsample_heatmap(answer["heatmap"], OVERLAY_SIZE)
    expected = blend_overlay(film, heat).numpy()
    overlays = np.stack([tf.io.decode_png(png).numpy() for png in answer["overlay_png_bytes"]])
    # Within one level: the export blends inside the XLA-compiled tail (gradcam_xla), whose
    # fused float arithmetic may round a value at .5 the other way.
    np.testing.assert_allclose(overlays.astype(int), expected.astype(int), rtol=0, atol=1)
    assert np.mean(overlays != expected) < 1e-3
    # Cold regions show the film itself: the display-size film, not an upscaled 64 px one.
    cold = heat.numpy() == 0.0
    assert cold.any()
    np.testing.assert_array_equal(overlays[..., 0][cold], film.numpy()[cold])


def test_export_at_256_px_keeps_the_overlay_at_the_input_size(
    tmp_path: Path, test_films: list[HeldOutFilm]
) -> None:
    # A model whose input is already a display size: the overlay is drawn as before the option
    # existed, from the model's own input and the S x S heatmap. The export blends in XLA
    # (gradcam_xla), whose float rounding may put a pixel one level from TensorFlow's blend
    # here (1 of 589,824 in one run, with this test's unseeded weights): the bound of
    # test_gradcam_compiled_with_xla_answers_as_the_plain_export, one level on under 0.1 %.
    config = get_preset("small").replace(
        name="small256", image_size=256, encoder_filters=(8, 8, 8, 8)
    )
    result = export_saved_model(
        build_model(config),
        config,
        tmp_path / "m",
        model_name=MODEL_NAME,
        warmup_images=[test_films[0].png],
    )
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    films = _one_per_class(test_films)

    answer = loaded.signatures["gradcam"](
        image_bytes=_pngs(films), target_class=tf.constant([-1, -1, -1], tf.int32)
    )

    assert result.overlay_size == read_model_info(tmp_path / "m")["overlay_size"] == 256
    model_film = tf.cast(tf.round(preprocess_batch(_pngs(films), 256)[..., 0] * 255.0), tf.uint8)
    expected = blend_overlay(model_film, answer["heatmap"]).numpy()
    overlays = np.stack([tf.io.decode_png(png).numpy() for png in answer["overlay_png_bytes"]])
    assert answer["heatmap"].shape == (3, 256, 256)
    np.testing.assert_allclose(overlays.astype(int), expected.astype(int), rtol=0, atol=1)
    assert np.mean(overlays != expected) < 1e-3


def test_default_overlay_size_is_the_input_size_but_at_least_256() -> None:
    assert [default_overlay_size(size) for size in (64, 255, 256, 384)] == [256, 256, 256, 384]


@pytest.mark.parametrize("overlay_size", [0, -1, MAX_OVERLAY_SIZE + 1, True, 256.0])
def test_export_overlay_size_out_of_range_raises_before_writing(
    trained: Trained, tmp_path: Path, overlay_size: Any
) -> None:
    with pytest.raises(ValueError, match="overlay_size"):
        export_saved_model(
            trained.model,
            trained.config,
            tmp_path / "out",
            model_name=MODEL_NAME,
            overlay_size=overlay_size,
        )
    assert not (tmp_path / "out").exists()


def test_gradcam_overlay_signature_answers_as_gradcam_without_the_heatmap(
    float32_loaded: Any, test_films: list[HeldOutFilm]
) -> None:
    films = _one_per_class(test_films)
    targets = tf.constant([-1, 0, 2], tf.int32)

    full = float32_loaded.signatures["gradcam"](image_bytes=_pngs(films), target_class=targets)
    overlay = float32_loaded.signatures["gradcam_overlay"](
        image_bytes=_pngs(films), target_class=targets
    )

    assert set(overlay) == set(full) - {"heatmap"}
    for name in overlay:
        np.testing.assert_array_equal(overlay[name].numpy(), full[name].numpy(), err_msg=name)


@pytest.mark.parametrize("target", [3, -2])
def test_gradcam_target_class_out_of_range_is_rejected(
    float32_loaded: Any, test_films: list[HeldOutFilm], target: int
) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError):
        float32_loaded.signatures["gradcam"](
            image_bytes=_pngs(test_films[:1]), target_class=tf.constant([target], tf.int32)
        )


def test_identity_asset_rewritten_in_a_copy_changes_every_signature(
    float32_export: Path, tmp_path: Path, test_films: list[HeldOutFilm]
) -> None:
    copy = tmp_path / "published" / "7"
    shutil.copytree(float32_export, copy)
    stamped = ModelIdentity(name="renamed", version=7, run_id="run-7")
    (copy / IDENTITY_ASSET_PATH).write_text(stamped.to_text(), encoding="utf-8")

    loaded = tf.saved_model.load(str(copy))
    images = _pngs(test_films[:2])
    answers = [
        loaded.signatures["serving_default"](image_bytes=images),
        loaded.signatures["gradcam"](image_bytes=images, target_class=tf.constant([-1, -1])),
        loaded.signatures["gradcam_overlay"](
            image_bytes=images, target_class=tf.constant([-1, -1])
        ),
    ]

    for answer in answers:
        assert answer["model_name"].numpy().tolist() == [b"renamed"] * 2
        assert answer["model_version"].numpy().tolist() == [7, 7]
        assert answer["model_run_id"].numpy().tolist() == [b"run-7"] * 2
    original = ModelIdentity.from_text((float32_export / IDENTITY_ASSET_PATH).read_text())
    assert original == ModelIdentity(MODEL_NAME, 0, RUN_ID)


def test_model_info_holds_classes_preset_layer_dtype_and_training(float32_export: Path) -> None:
    info = read_model_info(float32_export)
    assert (float32_export / MODEL_INFO_PATH).is_file()
    assert info["classes"] == list(CLASS_NAMES)
    assert info["preset"] == "small"
    assert info["input_size"] == SIZE
    assert info["gradcam_layer"] == GRADCAM_LAYER
    assert info["gradcam_weighting"] == "elementwise"
    assert info["gradcam_score"] == "logit minus normal's (centred logit for that class)"
    assert info["compute_dtype"] == "float32"
    assert info["overlay_size"] == OVERLAY_SIZE
    assert info["config"]["encoder_filters"] == [16, 32, 32]
    assert set(info["training"]["metrics"]) == {"macro_f1"}


def test_warmup_records_hold_one_request_per_signature_that_the_model_answers(
    float32_export: Path, float32_loaded: Any
) -> None:
    logs = read_warmup_records(float32_export / WARMUP_PATH)

    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 3
    requests = [log.predict_log.request for log in logs]
    assert [request.model_spec.signature_name for request in requests] == [
        "serving_default",
        "gradcam",
        "gradcam_overlay",
    ]
    for request in requests:
        # Replaying the request as TF Serving would at load: a failure would fail the load.
        inputs = {name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()}
        answer = float32_loaded.signatures[request.model_spec.signature_name](
            **{name: tf.constant(value) for name, value in inputs.items()}
        )
        assert answer["probabilities"].shape[0] == len(inputs["image_bytes"])


def test_bfloat16_twin_agrees_with_float32_model(
    float32_loaded: Any, bfloat16_loaded: Any, test_films: list[HeldOutFilm]
) -> None:
    images = _pngs(test_films)
    reference = float32_loaded.signatures["serving_default"](image_bytes=images)
    twin = bfloat16_loaded.signatures["serving_default"](image_bytes=images)

    agreement = np.mean(reference["class_index"].numpy() == twin["class_index"].numpy())
    difference = np.abs(reference["probabilities"].numpy() - twin["probabilities"].numpy())
    assert agreement >= 0.995
    assert difference.max() <= 0.02
    assert twin["probabilities"].dtype == tf.float32


def test_bfloat16_export_records_its_compute_dtype_and_explains(
    bfloat16_loaded: Any, test_films: list[HeldOutFilm]
) -> None:
    answer = bfloat16_loaded.signatures["gradcam"](
        image_bytes=_pngs(test_films[:1]), target_class=tf.constant([-1])
    )
    heatmap = answer["heatmap"].numpy()
    assert heatmap.dtype == np.float32
    assert 0.0 <= heatmap.min() <= heatmap.max() <= 1.0
    assert heatmap.max() > 0.0


def test_bfloat16_export_stores_bfloat16_weights_but_a_float32_softmax(
    bfloat16_loaded: Any,
) -> None:
    # The weights: floating variables (dropout's seed states are integers).
    dtypes = {
        variable.name: variable.dtype
        for variable in bfloat16_loaded.variables
        if variable.dtype.is_floating
    }
    assert dtypes
    softmax = {name for name in dtypes if name.startswith("probabilities/")}
    assert softmax
    assert all(dtypes[name] == tf.float32 for name in softmax)
    assert all(dtype == tf.bfloat16 for name, dtype in dtypes.items() if name not in softmax)


def test_export_into_non_empty_folder_raises(trained: Trained, tmp_path: Path) -> None:
    (tmp_path / "stale.txt").write_text("left over")
    with pytest.raises(FileExistsError):
        export_saved_model(trained.model, trained.config, tmp_path, model_name=MODEL_NAME)


def test_export_unknown_gradcam_layer_raises(trained: Trained, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no layer"):
        export_saved_model(
            trained.model,
            trained.config,
            tmp_path / "out",
            model_name=MODEL_NAME,
            gradcam_layer="encoder_conv_9",
        )


def test_temperature_calibrates_every_signature_and_changes_no_class(
    trained: Trained,
    float32_export: Path,
    float32_loaded: Any,
    test_films: list[HeldOutFilm],
    tmp_path: Path,
) -> None:
    from training_job.calibration import apply_temperature

    export_dir = tmp_path / "calibrated"
    export_saved_model(
        trained.model,
        trained.config,
        export_dir,
        model_name=MODEL_NAME,
        run_id=RUN_ID,
        gradcam_layer=GRADCAM_LAYER,
        temperature=2.5,
        calibration={"fitted_on": {"split": "val", "images": 45}},
        refer_threshold=0.75,
        abstention={"target_accuracy": 0.95},
    )
    calibrated = tf.saved_model.load(str(export_dir))
    films = _pngs(test_films[::5])
    targets = tf.constant([-1] * len(test_films[::5]), tf.int32)
    plain = float32_loaded.signatures["serving_default"](image_bytes=films)
    expected = apply_temperature(plain["probabilities"].numpy(), 2.5)

    for name in ("serving_default", "gradcam", "gradcam_overlay"):
        signature = calibrated.signatures[name]
        answer = (
            signature(image_bytes=films)
            if name == "serving_default"
            else signature(image_bytes=films, target_class=targets)
        )
        np.testing.assert_allclose(answer["probabilities"].numpy(), expected, atol=1e-5)
        assert answer["class_index"].numpy().tolist() == plain["class_index"].numpy().tolist()
        assert answer["refer_threshold"].numpy().tolist() == [0.75] * len(test_films[::5])
    # Calibration softens an over-confident answer: the top probability comes down.
    assert expected.max(axis=1).mean() < plain["probabilities"].numpy().max(axis=1).mean()
    info = read_model_info(export_dir)
    assert info["calibration"] == {
        "method": "temperature",
        "temperature": 2.5,
        "fitted_on": {"split": "val", "images": 45},
    }
    assert info["abstention"] == {"refer_threshold": 0.75, "target_accuracy": 0.95}
    uncalibrated = read_model_info(float32_export)
    assert uncalibrated["calibration"] == {"method": "none", "temperature": 1.0}
    assert uncalibrated["abstention"] == {"refer_threshold": 0.0}
    plain_threshold = plain["refer_threshold"].numpy().tolist()
    assert plain_threshold == [0.0] * len(test_films[::5])  # never refer


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("temperature", 0.0),
        ("temperature", -1.0),
        ("temperature", 0.01),
        ("temperature", 25.0),
        ("temperature", float("nan")),
        ("temperature", True),
        ("refer_threshold", -0.1),
        ("refer_threshold", 1.5),
        ("refer_threshold", float("nan")),
    ],
)
def test_export_temperature_or_threshold_out_of_range_raises_before_writing(
    trained: Trained, tmp_path: Path, option: str, value: float
) -> None:
    with pytest.raises(ValueError, match=option):
        export_saved_model(
            trained.model,
            trained.config,
            tmp_path / "export",
            model_name=MODEL_NAME,
            **{option: value},
        )
    assert not (tmp_path / "export").exists()


def test_ood_statistics_make_every_signature_refuse_what_is_not_a_chest_film(
    trained: Trained,
    float32_export: Path,
    float32_loaded: Any,
    test_films: list[HeldOutFilm],
    tmp_path: Path,
) -> None:
    import io

    from PIL import Image

    from training_job.not_chest import generate_not_chest

    ood = fitted_ood_check(trained, test_films)
    export_dir = tmp_path / "ood"
    export_saved_model(
        trained.model,
        trained.config,
        export_dir,
        model_name=MODEL_NAME,
        gradcam_layer=GRADCAM_LAYER,
        ood=ood,
        ood_report={"fitted_on": "test films"},
    )
    loaded = tf.saved_model.load(str(export_dir))
    rng = np.random.default_rng(0)
    grey_film = np.asarray(Image.open(io.BytesIO(test_films[0].png)).convert("L"))
    odd = {
        "colour": generate_not_chest("noise", np.random.default_rng(3)),
        "flat": generate_not_chest("flat", rng),
        "wide": generate_not_chest("wide", rng, film=grey_film),
        "skull": generate_not_chest("skull", rng),
    }
    inputs = tf.constant([test_films[1].png, *odd.values()])
    plain = float32_loaded.signatures["serving_default"](image_bytes=inputs)

    for name in ("serving_default", "gradcam", "gradcam_overlay"):
        signature = loaded.signatures[name]
        answer = (
            signature(image_bytes=inputs)
            if name == "serving_default"
            else signature(image_bytes=inputs, target_class=tf.constant([-1] * 5, tf.int32))
        )
        reasons = [value.decode() for value in answer["ood_reason"].numpy()]
        assert reasons[0] == ""  # a chest film passes
        assert answer["ood_score"].numpy()[0] < 1.0
        assert reasons[1:4] == ["colour", "nearly_constant", "aspect_ratio"]
        assert reasons[4] == "features"
        assert answer["ood_score"].numpy()[4] > 1.0
        # The checks add outputs and change nothing else.
        np.testing.assert_allclose(
            answer["probabilities"].numpy(), plain["probabilities"].numpy(), atol=1e-5
        )
    info = read_model_info(export_dir)["ood"]
    assert info["enabled"] is True
    assert info["threshold"] == pytest.approx(ood.threshold)
    assert info["fitted_on"] == "test films"
    assert read_model_info(float32_export)["ood"] == {"enabled": False}


def test_gradcam_compiled_with_xla_answers_as_the_plain_export(
    trained: Trained, test_films: list[HeldOutFilm], tmp_path: Path
) -> None:
    # gradcam_xla compiles Grad-CAM past its layer (one image at a time): the answers must be
    # those of the plain graph. With the OOD check, some of the maps its statistics read come
    # from the compiled tail and some from the front, so their order is checked too.
    from serving.model_server.servable import _read_meta_graph, xla_requirements

    ood = fitted_ood_check(trained, test_films)
    answers, infos = {}, {}
    films = [film for index in range(3) for film in test_films if film.class_index == index][::7]
    targets = tf.constant([(-1, 0, 1, 2)[i % 4] for i in range(len(films))], tf.int32)
    for xla in (False, True):
        export_dir = tmp_path / f"xla-{xla}"
        result = export_saved_model(
            trained.model,
            trained.config,
            export_dir,
            model_name=MODEL_NAME,
            gradcam_layer=GRADCAM_LAYER,
            ood=ood,
            gradcam_xla=xla,
        )
        assert result.gradcam_xla is xla
        infos[xla] = read_model_info(export_dir)
        needing = xla_requirements(_read_meta_graph(export_dir, ["serve"]))
        assert sorted(needing) == (["gradcam", "gradcam_overlay"] if xla else [])
        loaded = tf.saved_model.load(str(export_dir))
        answers[xla] = {
            key: value.numpy()
            for key, value in loaded.signatures["gradcam"](
                image_bytes=_pngs(films), target_class=targets
            ).items()
        }

    assert (infos[False]["gradcam_xla"], infos[True]["gradcam_xla"]) == (False, True)
    plain, compiled = answers[False], answers[True]
    assert len(films) >= 6
    for key in ("class_index", "target_class_index", "class_name", "ood_reason"):
        np.testing.assert_array_equal(compiled[key], plain[key])
    np.testing.assert_allclose(compiled["probabilities"], plain["probabilities"], atol=1e-5)
    np.testing.assert_allclose(compiled["heatmap"], plain["heatmap"], atol=1e-5)
    np.testing.assert_allclose(compiled["ood_score"], plain["ood_score"], rtol=1e-4, atol=1e-5)
    overlays = {
        xla: np.stack([tf.io.decode_png(png).numpy() for png in answers[xla]["overlay_png_bytes"]])
        for xla in (False, True)
    }
    np.testing.assert_allclose(
        overlays[True].astype(int), overlays[False].astype(int), rtol=0, atol=1
    )
    assert np.mean(overlays[True] != overlays[False]) < 1e-3
