"""DICOM uploads: every encoding reaches the model as the grey PNG a viewer shows, every bad file
gets its own 4xx, and nothing identifying is stored or logged (functions/dicom.py)."""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import highdicom
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from functions.images import image_statistics
from storage import keys
from tests.functions import sample_dicom as sd
from tests.functions.conftest import SECRET, Stack, error_of
from tests.functions.fake_serving import overlay_png
from tests.functions.sample_images import png_bytes


def _post(  # type: ignore[no-untyped-def]
    stack: Stack,
    data: bytes,
    function: str = "predict",
    content_type: str = "application/dicom",
    headers: dict[str, str] | None = None,
    query: str = "",
):
    sent = {**stack.bearer(), "Content-Type": content_type, **(headers or {})}
    return stack.client(function).post("/" + query, data=data, headers=sent)


def _model_input(stack: Stack, index: int = 0) -> np.ndarray:
    """The pixels of the PNG the model received (and a check that it is a PNG)."""
    (image,) = stack.fake.requests[index].images
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(image)) as png:
        return np.asarray(png)


def _min_max(values: np.ndarray) -> np.ndarray:
    """What a viewer shows of a file without a window: its own range onto 0..255."""
    values = values.astype(np.float64)
    return np.rint((values - values.min()) / (values.max() - values.min()) * 255).astype(np.uint8)


def _linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR), written out independently of pydicom."""
    values = values.astype(np.float64)
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    shown = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    shown = np.where(values <= low, 0, np.where(values > high, 255, shown))
    return np.rint(shown).astype(np.uint8)


def _stored_records(stack: Stack, user: str = "1") -> list[str]:
    return stack.root.list_keys(keys.inference_user_prefix(user))


# -- what the model receives ----------------------------------------------------------------


_ENCODINGS: dict[str, Callable[[Dataset], bytes]] = {
    "explicit-le": sd.to_bytes,
    "implicit-le": lambda ds: sd.to_bytes(ds, implicit=True),
    "explicit-be": lambda ds: sd.to_bytes(ds, big_endian=True),
    "rle": lambda ds: sd.compressed(ds, RLELossless),
    "jpeg-lossless": sd.jpeg_lossless,
    "jpeg-ls": lambda ds: sd.compressed(ds, JPEGLSLossless),
    "jpeg-2000": lambda ds: sd.compressed(ds, JPEG2000Lossless),
}


@pytest.mark.parametrize("bits", [8, 12, 16])
@pytest.mark.parametrize("encoding", list(_ENCODINGS))
def test_dicom_lossless_encodings_reach_the_model_as_the_viewer_grey_png(
    stack: Stack, encoding: str, bits: int
) -> None:
    stored = sd.scaled(sd.film(), bits)
    data = _ENCODINGS[encoding](sd.dataset(stored, bits_stored=bits))

    response = _post(stack, data)

    assert response.status_code == 200, response.get_json()
    assert np.array_equal(_model_input(stack), _min_max(stored))
    facts = response.get_json()["input"]["dicom"]
    assert facts["bits_stored"] == bits
    assert facts["window"]["source"] == "min_max"
    assert facts["inverted"] is False


def test_dicom_jpeg_baseline_is_decoded_within_its_loss(stack: Stack) -> None:
    image = sd.film()
    response = _post(stack, sd.jpeg_baseline(sd.dataset(image)))

    assert response.status_code == 200
    difference = _model_input(stack).astype(int) - _min_max(image).astype(int)
    assert np.abs(difference).mean() < 2.0
    assert response.get_json()["input"]["dicom"]["transfer_syntax"]["name"] == "JPEG Baseline"


@pytest.mark.parametrize("bits", [12, 16])
def test_dicom_monochrome1_is_inverted(stack: Stack, bits: int) -> None:
    stored = sd.scaled(sd.film(), bits)
    data = sd.to_bytes(sd.dataset(stored, bits_stored=bits, photometric="MONOCHROME1"))

    response = _post(stack, data)

    assert response.status_code == 200
    assert np.array_equal(_model_input(stack), 255 - _min_max(stored))
    assert response.get_json()["input"]["dicom"]["inverted"] is True


def test_dicom_window_after_rescale_is_applied_as_a_viewer_would(stack: Stack) -> None:
    stored = sd.scaled(sd.film(), 12)
    slope, intercept, center, width = 2.0, -1000.0, 3000.0, 4001.0
    extra = {
        "RescaleSlope": slope,
        "RescaleIntercept": intercept,
        "RescaleType": "US",
        "WindowCenter": [center, 1.0],  # a second, alternative window: the first one counts
        "WindowWidth": [width, 2.0],
    }
    data = sd.to_bytes(
        sd.dataset(stored, bits_stored=12, modality="CR", sop_class=sd.CR, extra=extra)
    )

    response = _post(stack, data)

    assert response.status_code == 200
    expected = _linear_window(stored * slope + intercept, center, width)
    assert np.abs(_model_input(stack).astype(int) - expected.astype(int)).max() <= 1
    facts = response.get_json()["input"]["dicom"]
    assert facts["window"] == {
        "source": "window",
        "center": center,
        "width": width,
        "function": "LINEAR",
    }
    assert facts["modality_lut"] == {"kind": "rescale", "slope": slope, "intercept": intercept}


def test_dicom_monochrome1_with_window_is_windowed_then_inverted(stack: Stack) -> None:
    stored = sd.scaled(sd.film(), 16)
    extra = {"WindowCenter": 30000.0, "WindowWidth": 20001.0}
    data = sd.to_bytes(sd.dataset(stored, photometric="MONOCHROME1", extra=extra))

    assert _post(stack, data).status_code == 200
    expected = 255 - _linear_window(stored, 30000.0, 20001.0)
    assert np.abs(_model_input(stack).astype(int) - expected.astype(int)).max() <= 1


def test_dicom_voi_lut_sequence_is_applied(stack: Stack) -> None:
    stored = (sd.film() // 16).astype(np.uint16)  # 0..15: a 16-entry LUT covers every value
    lut = Dataset()
    lut.LUTDescriptor = [16, 0, 8]
    lut.LUTData = [255 - 17 * value for value in range(16)]  # an inverting curve
    lut["LUTData"].VR = "US"
    data = sd.to_bytes(sd.dataset(stored, bits_stored=4, extra={"VOILUTSequence": [lut]}))

    response = _post(stack, data)

    assert response.status_code == 200
    assert np.array_equal(_model_input(stack), (255 - 17 * stored).astype(np.uint8))
    assert response.get_json()["input"]["dicom"]["window"]["source"] == "voi_lut"


def test_dicom_multi_frame_uses_the_first_frame(stack: Stack) -> None:
    first, second = sd.film(seed=1), sd.film(seed=2)
    frames = np.stack([first, second])
    data = sd.to_bytes(sd.multi_frame(frames))

    response = _post(stack, data)

    assert response.status_code == 200
    assert np.array_equal(_model_input(stack), _min_max(first))
    facts = response.get_json()["input"]["dicom"]
    assert (facts["frames"], facts["frame_used"]) == (2, 0)


def test_dicom_colour_secondary_capture_reaches_the_model_as_an_rgb_png(stack: Stack) -> None:
    image = sd.film()
    rgb = np.stack([image, image // 2, 255 - image], axis=-1)
    data = sd.to_bytes(sd.dataset(rgb, photometric="RGB", modality="OT", sop_class=sd.SC))

    response = _post(stack, data)

    assert response.status_code == 200
    assert np.array_equal(_model_input(stack), rgb)
    assert response.get_json()["input"]["dicom"]["output"] == "rgb8"


@pytest.mark.parametrize(
    ("content_type", "filename"),
    [("application/dicom", "x.dcm"), ("application/octet-stream", "x"), ("", "IM0001")],
)
def test_dicom_multipart_upload_is_read_by_type_or_magic(
    stack: Stack, content_type: str, filename: str
) -> None:
    image = sd.film()
    data = sd.to_bytes(sd.dataset(image))

    response = stack.client("predict").post(
        "/",
        data={"file": (io.BytesIO(data), filename, content_type)},
        headers=stack.bearer(),
    )

    assert response.status_code == 200, response.get_json()
    assert np.array_equal(_model_input(stack), _min_max(image))


def test_dicom_record_says_how_it_was_converted(stack: Stack) -> None:
    data = sd.to_bytes(
        sd.dataset(sd.scaled(sd.film(), 12), bits_stored=12, modality="CR", sop_class=sd.CR)
    )

    body = _post(stack, data).get_json()

    stored = stack.root.get_json(keys.inference_record("1", body["id"]))
    assert stored["input"] == body["input"]
    facts = stored["input"]["dicom"]
    assert {
        "modality": "CR",
        "sop_class": "CR",
        "photometric_interpretation": "MONOCHROME2",
        "bits_stored": 12,
        "frames": 1,
        "pixel_spacing_mm": [0.143, 0.143],
    }.items() <= facts.items()
    assert facts["transfer_syntax"] == {
        "uid": "1.2.840.10008.1.2.1",
        "name": "Explicit VR Little Endian",
    }
    assert stored["input"]["format"] == "DICOM"
    assert stored["input"]["transformation"] == "dicom_to_png"
    assert stored["input"]["sha256"] == hashlib.sha256(data).hexdigest()
    # The drift statistics describe what the model saw (the converted image).
    assert stored["input"]["stats"] == image_statistics(stack.fake.requests[0].images[0])


def test_dicom_gradcam_answers_the_overlay_for_a_dicom_upload(stack: Stack) -> None:
    data = sd.to_bytes(sd.dataset(sd.scaled(sd.film(), 16)))

    response = _post(stack, data, function="gradcam")

    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert np.array_equal(_model_input(stack), _min_max(sd.scaled(sd.film(), 16)))
    record = stack.root.get_json(keys.inference_record("1", response.headers["X-Inference-Id"]))
    assert record["input"]["dicom"]["bits_stored"] == 16


# -- refusals -------------------------------------------------------------------------------


def _without_pixel_data() -> bytes:
    ds = sd.dataset(sd.film())
    del ds.PixelData
    return sd.to_bytes(ds)


def _video() -> bytes:
    ds = sd.dataset(sd.film())
    ds.PixelData = sd.encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 200])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video
    return sd.to_bytes(ds)


def _corrupt_jpeg_2000() -> bytes:
    """A JPEG 2000 codestream whose main header (SIZ) is overwritten. (Damage inside the
    entropy-coded data of a J2K stream is not detectable: it has no checksums; it decodes.)"""
    data = bytearray(sd.compressed(sd.dataset(sd.scaled(sd.film(), 16)), JPEG2000Lossless))
    start = data.index(b"\xff\x4f\xff\x51")
    data[start + 2 : start + 40] = b"\xff" * 38
    return bytes(data)


_FULL = sd.to_bytes(sd.dataset(sd.scaled(sd.film(), 16)))
_REFUSED: dict[str, tuple[Callable[[], bytes], int, str]] = {
    "cut-in-preamble": (lambda: _FULL[:100], 422, "invalid_dicom"),
    "cut-in-meta": (lambda: _FULL[:200], 422, "invalid_dicom"),
    "cut-in-header": (lambda: _FULL[:420], 422, "invalid_dicom"),
    "cut-in-pixels": (lambda: _FULL[: len(_FULL) // 2], 422, "invalid_dicom"),
    "cut-in-jpeg-2000": (
        lambda: sd.compressed(sd.dataset(sd.scaled(sd.film(), 16)), JPEG2000Lossless)[:-60],
        422,
        "invalid_dicom",
    ),
    "corrupt-jpeg-2000": (_corrupt_jpeg_2000, 422, "invalid_dicom"),
    "no-magic": (lambda: b"not a dicom file" * 20, 422, "invalid_dicom"),
    "garbage-after-magic": (lambda: bytes(128) + b"DICM" + b"\x07" * 300, 422, "invalid_dicom"),
    "ct-slice": (
        lambda: sd.to_bytes(
            sd.dataset(sd.film().astype(np.int16) - 1000, modality="CT", sop_class=sd.CT)
        ),
        422,
        "unsupported_modality",
    ),
    "mr-as-secondary-capture": (
        lambda: sd.to_bytes(sd.dataset(sd.film(), modality="MR", sop_class=sd.SC)),
        422,
        "unsupported_modality",
    ),
    "segmentation": (
        lambda: sd.to_bytes(
            sd.dataset(sd.film(), modality="SEG", sop_class="1.2.840.10008.5.1.4.1.1.66.4")
        ),
        422,
        "unsupported_modality",
    ),
    "no-pixel-data": (_without_pixel_data, 422, "missing_pixel_data"),
    "video": (_video, 415, "unsupported_transfer_syntax"),
}


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter:UserWarning")
@pytest.mark.parametrize("case", list(_REFUSED))
def test_dicom_bad_file_gets_its_own_4xx_and_nothing_is_stored(stack: Stack, case: str) -> None:
    make, status, code = _REFUSED[case]

    response = _post(stack, make())

    assert response.status_code == status, response.get_json()
    assert error_of(response) == code
    assert stack.fake.requests == []
    assert _stored_records(stack) == []


def test_dicom_over_the_pixel_cap_is_refused_before_decoding(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(MAX_PIXELS="10000")
    frames = np.stack([sd.film()] * 2)  # 2 x 7,680 pixels: one frame fits, the file does not
    data = sd.to_bytes(sd.multi_frame(frames))

    response = _post(stack, data)

    assert response.status_code == 422
    assert error_of(response) == "too_many_pixels"
    assert stack.fake.requests == []


def test_dicom_typed_as_png_is_refused_as_not_png(stack: Stack) -> None:
    response = _post(stack, _FULL, content_type="image/png")

    assert response.status_code == 415
    assert error_of(response) == "unsupported_media_type"


# -- privacy --------------------------------------------------------------------------------


def _every_stored_byte(stack: Stack) -> list[tuple[str, bytes]]:
    return [
        (key, store.get_bytes(key))
        for store in (stack.root, stack.auth_store)
        for key in store.list_keys("")
    ]


def test_dicom_phi_never_reaches_the_store_or_the_logs(
    any_stack: Stack, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    data = sd.to_bytes(
        sd.dataset(sd.scaled(sd.film(), 12), bits_stored=12, modality="CR", sop_class=sd.CR)
    )

    answers = [
        _post(any_stack, data),
        _post(any_stack, data, function="gradcam"),
        _post(any_stack, data, function="gradcam", headers={"Accept": "application/json"}),
        _post(any_stack, data, function="gradcam", headers={"Accept": "application/dicom"}),
        _post(any_stack, data, headers={"Accept": "application/dicom"}),
        _post(any_stack, sd.to_bytes(sd.dataset(sd.film(), modality="CT", sop_class=sd.CT))),
    ]

    assert [answer.status_code for answer in answers] == [200, 200, 200, 200, 200, 422]
    secrets = [*sd.FAKE_PHI.values(), sd.STUDY_UID, sd.SERIES_UID, sd.INSTANCE_UID]
    secrets = [value for value in secrets if len(value) > 2]  # "F" would match anything
    stored = _every_stored_byte(any_stack)
    assert len(stored) >= 5  # users file, three records, one overlay... at least
    captured = capsys.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert "inference_id" in logs or "request" in logs  # the logs were captured at all
    for value in secrets:
        for key, content in stored:
            assert value.encode() not in content, f"{value!r} stored in {key}"
        assert value not in logs, f"{value!r} logged"
        for answer in answers[:5]:
            # DICOM answers reference the source image by its UIDs (study, series, instance).
            if value not in (sd.STUDY_UID, sd.SERIES_UID, sd.INSTANCE_UID):
                assert value.encode() not in answer.data, f"{value!r} in an answer"


def test_dicom_uids_are_recorded_as_keyed_hashes_stable_per_study(stack: Stack) -> None:
    first = sd.to_bytes(sd.dataset(sd.film(seed=1)))
    second = sd.to_bytes(sd.dataset(sd.film(seed=2)))  # same study, another image

    one = _post(stack, first).get_json()["input"]["dicom"]["uid_hashes"]
    two = _post(stack, second).get_json()["input"]["dicom"]["uid_hashes"]

    key = hmac.new(SECRET.encode(), b"dicom-uid/v1", hashlib.sha256).digest()
    expected = hmac.new(key, sd.STUDY_UID.encode(), hashlib.sha256).hexdigest()[:32]
    assert one["study"] == two["study"] == expected
    assert set(one) == {"study", "series", "sop_instance"}
    assert sd.STUDY_UID not in str(one)


def test_dicom_uid_hashes_change_with_the_deployment_secret(
    stack_factory: Callable[..., Stack],
) -> None:
    data = sd.to_bytes(sd.dataset(sd.film()))
    first = _post(stack_factory(), data).get_json()["input"]["dicom"]["uid_hashes"]
    other = stack_factory(SECRET_KEY="another-secret-" + "z" * 40)

    second = _post(other, data).get_json()["input"]["dicom"]["uid_hashes"]

    assert first["study"] != second["study"]


# -- DICOM answers --------------------------------------------------------------------------


def _read_part10(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))  # a Part 10 file: preamble and meta


def _content_items(items: Any) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _content_items(item.get("ContentSequence", []))


def test_dicom_gradcam_answers_a_secondary_capture_in_the_source_study(stack: Stack) -> None:
    data = sd.to_bytes(sd.dataset(sd.scaled(sd.film(), 12), bits_stored=12))

    response = _post(stack, data, function="gradcam", headers={"Accept": "application/dicom"})

    assert response.status_code == 200
    assert response.mimetype == "application/dicom"
    capture = _read_part10(response.data)
    assert capture.SOPClassUID == sd.SC
    assert capture.file_meta.MediaStorageSOPInstanceUID == capture.SOPInstanceUID
    assert capture.StudyInstanceUID == sd.STUDY_UID
    assert capture.SeriesInstanceUID != sd.SERIES_UID
    assert capture.SOPInstanceUID != sd.INSTANCE_UID
    (reference,) = capture.SourceImageSequence
    assert (reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID) == (
        sd.DX,
        sd.INSTANCE_UID,
    )
    assert capture.PatientName == ""
    assert capture.PatientID == ""
    assert capture.PhotometricInterpretation == "RGB"
    with Image.open(io.BytesIO(overlay_png())) as overlay:
        assert np.array_equal(capture.pixel_array, np.asarray(overlay.convert("RGB")))
    # The history keeps the record and the PNG overlay, not the DICOM answer.
    inference_id = response.headers["X-Inference-Id"]
    assert stack.root.get_bytes(keys.gradcam_image("1", inference_id)) == overlay_png()


def test_dicom_gradcam_format_dicom_for_a_png_upload_starts_a_new_study(stack: Stack) -> None:
    response = _post(
        stack, png_bytes(), function="gradcam", content_type="image/png", query="?format=dicom"
    )

    assert response.status_code == 200
    capture = _read_part10(response.data)
    assert capture.SOPClassUID == sd.SC
    assert "SourceImageSequence" not in capture
    assert capture.StudyInstanceUID != sd.STUDY_UID


def test_dicom_predict_answers_a_structured_report_of_the_record(stack: Stack) -> None:
    data = sd.to_bytes(sd.dataset(sd.scaled(sd.film(), 16), modality="CR", sop_class=sd.CR))

    response = _post(stack, data, headers={"Accept": "application/dicom"})

    assert response.status_code == 200
    assert response.mimetype == "application/dicom"
    record = stack.root.get_json(keys.inference_record("1", response.headers["X-Inference-Id"]))
    report = _read_part10(response.data)
    assert report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert report.StudyInstanceUID == sd.STUDY_UID
    assert report.PatientName == ""
    assert report.PatientID == ""
    assert report.CompletionFlag == "COMPLETE"
    # highdicom reads it back as a TID 1500 report.
    parsed = highdicom.sr.srread(io.BytesIO(response.data))
    assert parsed.SOPInstanceUID == report.SOPInstanceUID
    items = list(_content_items(report.ContentSequence))
    probabilities = {
        item.ConceptNameCodeSequence[0].CodeMeaning: float(
            item.MeasuredValueSequence[0].NumericValue
        )
        for item in items
        if item.ValueType == "NUM"
    }
    assert probabilities == {
        f"Probability of {name}": pytest.approx(value)
        for name, value in record["probabilities"].items()
    }
    codes = {
        item.ConceptNameCodeSequence[0].CodeMeaning: item.ConceptCodeSequence[0].CodeMeaning
        for item in items
        if item.ValueType == "CODE"
    }
    assert codes["Predicted class"] == record["predicted_class"]
    assert codes["Decision"] == record["decision"]
    texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item.get("TextValue") for item in items}
    assert texts.get("Tracking Identifier") == record["id"]
    referenced = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in items
        if item.ValueType == "IMAGE"
    }
    assert referenced == {sd.INSTANCE_UID}
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == sd.STUDY_UID
    model = f"{record['model']['name']}"
    assert model.encode() in response.data


def test_dicom_predict_answers_json_unless_dicom_is_preferred(stack: Stack) -> None:
    data = sd.to_bytes(sd.dataset(sd.film()))

    response = _post(stack, data, headers={"Accept": "application/json, application/dicom;q=0.5"})

    assert response.mimetype == "application/json"


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None and os.environ.get("CI") != "true",
    reason="dicom3tools' dciodvfy is not installed (.ci/run installs it)",
)
def test_dicom_answers_pass_dicom3tools_validation(stack: Stack, tmp_path: Path) -> None:
    """dciodvfy (dicom3tools) checks each answer against its IOD: no error (warnings about
    DICOMDIR keys and our private coding scheme are expected)."""
    data = sd.to_bytes(sd.dataset(sd.scaled(sd.film(), 12), bits_stored=12))
    answers = {
        "secondary-capture": _post(
            stack, data, function="gradcam", headers={"Accept": "application/dicom"}
        ),
        "structured-report": _post(stack, data, headers={"Accept": "application/dicom"}),
    }
    for name, response in answers.items():
        assert response.status_code == 200, name
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(response.data)
        checked = subprocess.run(
            ["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        output = checked.stdout + checked.stderr
        errors = [line for line in output.splitlines() if line.startswith("Error")]
        assert errors == [], (name, output)
        assert ("SCImage" if name == "secondary-capture" else "ComprehensiveSR") in output


def test_history_finds_a_users_records_of_one_study(any_stack: Stack) -> None:
    """`?study=<Study Instance UID>`: the server hashes the UID as the records keep it and
    returns that study's records only (pages carry the filter); the UID is never stored."""
    other_study = "1.2.826.0.1.3680043.8.498.99999999999999999999"
    first = sd.to_bytes(sd.dataset(sd.scaled(sd.film(seed=1), 12), bits_stored=12))
    second_ds = sd.dataset(sd.scaled(sd.film(seed=2), 12), bits_stored=12)
    second_ds.StudyInstanceUID = other_study
    ids = {
        "first": [_post(any_stack, first).get_json()["id"] for _ in range(3)],
        "second": [_post(any_stack, sd.to_bytes(second_ds)).get_json()["id"]],
        "png": [_post(any_stack, png_bytes(), content_type="image/png").get_json()["id"]],
    }
    history = any_stack.client("history")
    page = history.get(
        "/", query_string={"study": sd.STUDY_UID, "limit": "2"}, headers=any_stack.bearer()
    ).get_json()
    assert [record["id"] for record in page["records"]] == ids["first"][::-1][:2]
    rest = history.get(
        "/",
        query_string={"study": sd.STUDY_UID, "limit": "2", "page_token": page["next_page_token"]},
        headers=any_stack.bearer(),
    ).get_json()
    assert [record["id"] for record in rest["records"]] == ids["first"][:1]
    assert rest["next_page_token"] is None
    other = history.get(
        "/", query_string={"study": other_study}, headers=any_stack.bearer()
    ).get_json()
    assert [record["id"] for record in other["records"]] == ids["second"]
    # A page token of one study is not good for another.
    wrong = history.get(
        "/",
        query_string={"study": other_study, "page_token": page["next_page_token"]},
        headers=any_stack.bearer(),
    )
    assert error_of(wrong) == "invalid_page_token"
    bad = history.get("/", query_string={"study": "not-a-uid"}, headers=any_stack.bearer())
    assert bad.status_code == 400
    assert error_of(bad) == "invalid_parameter"
    for key in any_stack.root.list_keys(keys.INFERENCE_AREA):
        assert sd.STUDY_UID.encode() not in any_stack.root.get_bytes(key)
