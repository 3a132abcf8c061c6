"""The model identity asset's text format (read in-graph by the served model)."""

from __future__ import annotations

import pytest

from model_contract.identity import ModelIdentity


def test_identity_text_round_trip_keeps_empty_run_id() -> None:
    identity = ModelIdentity(name="cnn_vit", version=0, run_id="")
    assert identity.to_text() == "name\tcnn_vit\nversion\t0\nrun_id\t\n"
    assert ModelIdentity.from_text(identity.to_text()) == identity


@pytest.mark.parametrize(
    "text",
    [
        "name\tcnn_vit\nversion\tseven\nrun_id\tr\n",
        "name\tcnn_vit\nrun_id\tr\n",
        "name cnn_vit\nversion\t1\nrun_id\tr\n",
    ],
)
def test_identity_from_malformed_text_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        ModelIdentity.from_text(text)


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "a\tb"},
        {"name": ""},
        {"name": "m", "run_id": "x\ny"},
        {"name": "m", "version": -1},
    ],
)
def test_identity_with_unwritable_field_raises_value_error(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ModelIdentity(**fields)  # type: ignore[arg-type]
