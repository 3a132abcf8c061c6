"""DICOM answers, on request (`Accept: application/dicom`): the Grad-CAM overlay as a Secondary
Capture image and the prediction as a Structured Report (TID 1500 Measurement Report), built
with highdicom, imported on the first such request only.

What they carry, and what not (README "DICOM"): new Series and SOP Instance UIDs; the source's
Study Instance UID (so the answer files into the same study) and a reference to the source image
(its SOP Class and Instance UIDs); the model's name, version and run id. Never any attribute of
the patient or the study beyond those UIDs: the Patient module is there, empty (its Type 2
attributes present without values), so a client filing the answer into a PACS adds the patient
it already holds. For a PNG or JPEG upload there is no source: a new Study Instance UID, no
reference. Nothing here is stored: the record and the PNG overlay are what the history keeps.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from PIL import Image

from functions.dicom import DicomSource

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["secondary_capture", "structured_report"]

_MANUFACTURER = "xray-serverless"
# Private coding scheme (PS3.16 §8.2: designators beginning with "99") for the model's classes,
# whose names come from the model, not from a fixed list.
_SCHEME = "99XRAY"
_SERIES_NUMBER_SC = 9001
_SERIES_NUMBER_SR = 9002


def _highdicom() -> Any:
    """highdicom, imported on first use, its logger held at WARNING: at INFO it names the
    source's SOP Instance UID ("copy Patient-related attributes from dataset <uid>"), and the
    logs carry no identifier of an upload."""
    import highdicom

    logging.getLogger("highdicom").setLevel(logging.WARNING)
    return highdicom


def secondary_capture(
    overlay_png: bytes, record: Mapping[str, Any], source: DicomSource | None
) -> bytes:
    """The Grad-CAM overlay as a DICOM Secondary Capture image (RGB, 8-bit), Part 10 bytes."""
    import numpy as np
    from pydicom.uid import generate_uid

    hd = _highdicom()
    with Image.open(io.BytesIO(overlay_png)) as overlay:
        pixels = np.asarray(overlay.convert("RGB"))
    model = record["model"]
    image = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=_study_uid(source),
        series_instance_uid=generate_uid(),
        series_number=_SERIES_NUMBER_SC,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=_MANUFACTURER,
        patient_orientation=("L", "F"),
    )
    gradcam = record.get("gradcam", {})
    image.SeriesDescription = f"Grad-CAM {gradcam.get('target_class', '')}".strip()[:64]
    image.DerivationDescription = (
        f"Grad-CAM overlay of class {gradcam.get('target_class', '')} by model "
        f"{model['name']} version {model['version']} (run {model['run_id']})"
    )[:1024]
    image.ManufacturerModelName = str(model["name"])[:64]
    image.BurnedInAnnotation = "NO"
    # General Series: Laterality is Type 2C (present, empty for an unpaired part such as the
    # chest); dciodvfy flags its absence.
    image.Laterality = None
    if source is not None and source.sop_instance_uid:
        image.SourceImageSequence = [_reference(source)]
    return _part10(image)


def structured_report(record: Mapping[str, Any], source: DicomSource | None) -> bytes:
    """The prediction as a DICOM Comprehensive SR holding a TID 1500 Measurement Report: the
    class as a qualitative evaluation, each class's probability as a measurement, the model as
    the observing device and algorithm, the source image referenced."""
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    hd = _highdicom()
    model = record["model"]
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(),
        name=str(model["name"])[:64],
        manufacturer_name=_MANUFACTURER,
        model_name=f"{model['name']} {model['version']}"[:64],
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    evidence = _evidence(source)
    measurements = [
        hd.sr.Measurement(
            name=hd.sr.CodedConcept(f"p-{name}"[:16], _SCHEME, f"Probability of {name}"[:64]),
            value=round(float(probability), 6),
            unit=codes.UCUM.NoUnits,
        )
        for name, probability in record["probabilities"].items()
    ]
    finding = hd.sr.QualitativeEvaluation(
        name=hd.sr.CodedConcept("class", _SCHEME, "Predicted class"),
        value=hd.sr.CodedConcept(
            str(record["predicted_class"])[:16], _SCHEME, str(record["predicted_class"])[:64]
        ),
    )
    decision = hd.sr.QualitativeEvaluation(
        name=hd.sr.CodedConcept("decision", _SCHEME, "Decision"),
        value=hd.sr.CodedConcept(
            str(record["decision"])[:16], _SCHEME, str(record["decision"])[:64]
        ),
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier=str(record["id"])[:64]
        ),
        algorithm_id=hd.sr.AlgorithmIdentification(
            name=str(model["name"])[:64],
            version=str(model["version"]),
            parameters=[str(model["run_id"])[:64]],
        ),
        measurements=measurements,
        qualitative_evaluations=[finding, decision],
        source_images=(
            [
                hd.sr.SourceImageForMeasurementGroup(
                    referenced_sop_class_uid=evidence.SOPClassUID,
                    referenced_sop_instance_uid=evidence.SOPInstanceUID,
                )
            ]
            if source is not None
            else None
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=hd.sr.CodedConcept("399208008", "SCT", "Plain chest X-ray"),
        imaging_measurements=[group],
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[evidence],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=_SERIES_NUMBER_SR,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=_MANUFACTURER,
        is_complete=True,
        record_evidence=source is not None,
    )
    sr.SeriesDescription = f"Classification by {model['name']} {model['version']}"[:64]
    return _part10(sr)


def _study_uid(source: DicomSource | None) -> str:
    from pydicom.uid import generate_uid

    if source is not None and source.study_instance_uid:
        return source.study_instance_uid
    return str(generate_uid())


def _reference(source: DicomSource) -> Dataset:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = source.sop_class_uid
    item.ReferencedSOPInstanceUID = source.sop_instance_uid
    return item


def _evidence(source: DicomSource | None) -> Dataset:
    """The source image as highdicom reads evidence from: its UIDs only, the patient empty
    (highdicom copies the patient and study attributes of the evidence into the report)."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    evidence = Dataset()
    evidence.StudyInstanceUID = _study_uid(source)
    has_source = source is not None and bool(source.sop_instance_uid)
    evidence.SeriesInstanceUID = (
        source.series_instance_uid if source is not None and has_source else generate_uid()
    )
    evidence.SOPClassUID = (
        source.sop_class_uid if source is not None and has_source else "1.2.840.10008.5.1.4.1.1.7"
    )
    evidence.SOPInstanceUID = (
        source.sop_instance_uid if source is not None and has_source else generate_uid()
    )
    evidence.Modality = source.modality if source is not None and source.modality else "OT"
    for name in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(evidence, name, "")
    for name in ("StudyDate", "StudyTime", "StudyID", "AccessionNumber"):
        setattr(evidence, name, "")
    evidence.ReferringPhysicianName = ""
    return evidence


def _part10(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
