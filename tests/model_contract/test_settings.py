"""Which model a deployable works with: `MODEL_NAME`, the original `PROD_MODEL_NAME`, checked
as a key segment into the deployable's own reader."""

from __future__ import annotations

import pytest

from common.settings import EnvReader, SettingsError
from model_contract.settings import read_model_name


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "cnn_vit"),
        ({"MODEL_NAME": "other"}, "other"),
        ({"PROD_MODEL_NAME": "legacy"}, "legacy"),
        ({"MODEL_NAME": "new", "PROD_MODEL_NAME": "legacy"}, "new"),
    ],
)
def test_read_model_name_default_name_and_original_alias(
    environ: dict[str, str], expected: str
) -> None:
    env = EnvReader(environ, "x")
    assert read_model_name(env) == expected
    assert env.problems == []


def test_read_model_name_invalid_is_a_problem_of_the_reader() -> None:
    env = EnvReader({"PROD_MODEL_NAME": "../escape"}, "x")
    assert read_model_name(env) == "cnn_vit"
    with pytest.raises(SettingsError) as caught:
        env.check()
    assert "MODEL_NAME" in caught.value.problems[0]
