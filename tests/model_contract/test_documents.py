"""The one codec of `registry.json` and `manifest.json`: round trips, and every way a document can
break the contract refused with InvalidDocument (the registry operations, the model sync and the
CLIs all read through it)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from model_contract.documents import (
    Manifest,
    ManifestFile,
    RegistryDocument,
    VersionEntry,
)
from model_contract.errors import InvalidDocument, RegistryError

DIGEST = "ab" * 32


def _entry(version: int, **changes: Any) -> dict[str, Any]:
    document = VersionEntry(
        version=version,
        run_id=f"run-{version}",
        parent_version=None,
        published_at="2026-12-07T00:00:00Z",
        metrics={"macro_f1": 0.9},
        preset="small",
    ).to_json()
    document.update(changes)
    return document


def _registry(**changes: Any) -> dict[str, Any]:
    document = RegistryDocument(name="cnn_vit", stable=2, previous_stable=(1,)).to_json()
    document["versions"] = {"1": _entry(1), "2": _entry(2, status="serving")}
    document.update(changes)
    return document


def _manifest(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": "cnn_vit",
        "version": 2,
        "files": [
            {"path": "saved_model.pb", "size": 10, "sha256": DIGEST},
            {"path": "variables/variables.index", "size": 3, "sha256": DIGEST},
        ],
        "created_at": "2026-12-07T00:00:00Z",
    }
    document.update(changes)
    return document


def test_registry_document_round_trips_through_bytes() -> None:
    registry = RegistryDocument.from_json(_registry(canary=1), expected_name="cnn_vit")

    assert RegistryDocument.decode(registry.encode(), "cnn_vit") == registry
    assert registry.labels == {"stable": 2, "canary": 1}
    assert registry.served_versions == {1, 2}
    assert registry.labels_of(2) == ("stable",)
    assert registry.versions[1].metrics == {"macro_f1": 0.9}


def test_registry_document_without_name_takes_the_expected_one() -> None:
    document = _registry()
    del document["name"]

    assert RegistryDocument.from_json(document, expected_name="cnn_vit").name == "cnn_vit"


@pytest.mark.parametrize(
    "changes",
    [
        {"stable": True},
        {"stable": "2"},
        {"stable": 0},
        {"canary": -1},
        {"name": "other"},
        {"schema": 99},
        {"previous_stable": "1"},
        {"previous_stable": [1.5]},
        {"versions": {"one": _entry(1)}},
        {"versions": {"1": _entry(2)}},
        {"versions": {"1": _entry(1, status="bogus")}},
        {"versions": {"1": _entry(1, metrics={"macro_f1": "high"})}},
        {"versions": {"1": _entry(1, run_id=7)}},
        {"versions": []},
    ],
    ids=repr,
)
def test_registry_document_breaking_the_contract_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidDocument):
        RegistryDocument.from_json(_registry(**changes), expected_name="cnn_vit")


def test_registry_document_not_json_or_not_an_object_is_refused() -> None:
    for data in (b"{not json", b"[1, 2]", b'"text"'):
        with pytest.raises(InvalidDocument) as caught:
            RegistryDocument.decode(data, "cnn_vit")
        assert isinstance(caught.value, RegistryError)
        assert caught.value.code == "invalid_document"


def test_manifest_round_trips_and_counts_bytes() -> None:
    manifest = Manifest.from_json(_manifest(), "cnn_vit", 2)

    assert Manifest.decode(manifest.encode(), "cnn_vit", 2) == manifest
    assert manifest.total_bytes == 13
    assert manifest.files[0] == ManifestFile("saved_model.pb", 10, DIGEST)


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "other"},
        {"version": 3},
        {"version": True},
        {"files": []},
        {"files": [{"path": "variables/x", "size": 1, "sha256": DIGEST}]},
        {"files": [{"path": "saved_model.pb", "size": -1, "sha256": DIGEST}]},
        {"files": [{"path": "saved_model.pb", "size": True, "sha256": DIGEST}]},
        {"files": [{"path": "saved_model.pb", "size": 1, "sha256": "xyz"}]},
        {"files": [{"path": "saved_model.pb", "size": 1, "sha256": DIGEST}] * 2},
    ],
    ids=repr,
)
def test_manifest_breaking_the_contract_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidDocument):
        Manifest.from_json(_manifest(**changes), "cnn_vit", 2)


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../escape", "a/../../b", "a//b", "./a", "a\\b", "manifest.json", "", "a\x00"],
)
def test_manifest_path_outside_the_version_folder_is_refused(path: str) -> None:
    files = [
        {"path": "saved_model.pb", "size": 1, "sha256": DIGEST},
        {"path": path, "size": 1, "sha256": DIGEST},
    ]
    with pytest.raises(InvalidDocument):
        Manifest.from_json(_manifest(files=files), "cnn_vit", 2)


def test_manifest_encode_is_what_the_registry_writes() -> None:
    manifest = Manifest.from_json(_manifest(), "cnn_vit", 2)

    assert json.loads(manifest.encode()) == _manifest()
