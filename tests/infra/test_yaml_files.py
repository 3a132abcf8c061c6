"""Every YAML file under infra/ parses, multi-document aware."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.infra.helpers import INFRA, load_documents, yaml_files


def test_yaml_files_in_infra_found() -> None:
    names = {path.relative_to(INFRA).as_posix() for path in yaml_files()}

    assert {"compose/compose.yaml", "k8s/base/kustomization.yaml"} <= names


@pytest.mark.parametrize("path", yaml_files(), ids=lambda path: path.relative_to(INFRA).as_posix())
def test_yaml_file_every_document_parses(path: Path) -> None:
    documents = load_documents(path)

    assert documents, f"{path} holds no YAML document"
    assert all(isinstance(document, dict) for document in documents)


def test_load_documents_broken_yaml_raises(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: 1\n---\nb: [unclosed\n", encoding="utf-8")

    with pytest.raises(yaml.YAMLError):
        load_documents(broken)
