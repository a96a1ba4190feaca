"""Version resolution and atomic publishing in the model store (no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service import model_store
from service.errors import ArtifactError, NotFound


def stage_and_publish(root: Path, name: str) -> model_store.ModelVersion:
    before = model_store.list_versions(root, name)
    with model_store.staging(root, name) as staged:
        (staged / "model.keras").write_bytes(b"x")
        model_store.write_json(
            staged / model_store.METADATA_FILE,
            {
                "name": name,
                "version": 0,
                "labels": ["a", "b"],
                "image_size": [8, 8],
                "created_at": "2026-01-01T00:00:00+00:00",
            },
        )
        # Mid-build, readers see no new version.
        assert model_store.list_versions(root, name) == before
        return model_store.publish(root, name, staged)


def test_versions_are_integers_and_latest_is_highest(tmp_path: Path) -> None:
    assert stage_and_publish(tmp_path, "m").version == 1
    assert stage_and_publish(tmp_path, "m").version == 2
    (tmp_path / "m" / "notes").mkdir()
    assert model_store.list_versions(tmp_path, "m") == [1, 2]
    assert model_store.resolve(tmp_path, "m").version == 2
    assert model_store.resolve(tmp_path, "m", 1).path == tmp_path / "m" / "1"
    assert model_store.list_models(tmp_path) == ["m"]


def test_publish_writes_the_assigned_version_into_metadata(tmp_path: Path) -> None:
    stage_and_publish(tmp_path, "m")
    v = stage_and_publish(tmp_path, "m")
    assert model_store.load_metadata(v.path).version == 2
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".staging")]


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), model_store.staging(tmp_path, "m") as staged:
        (staged / "model.keras").write_bytes(b"half")
        raise RuntimeError("training failed")
    assert model_store.list_versions(tmp_path, "m") == []
    assert list((tmp_path / "m").iterdir()) == []


def test_unknown_model_or_version_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no versions"):
        model_store.resolve(tmp_path, "ghost")
    stage_and_publish(tmp_path, "m")
    with pytest.raises(NotFound, match="no version 7"):
        model_store.resolve(tmp_path, "m", 7)


def test_corrupt_metadata_is_an_artifact_error(tmp_path: Path) -> None:
    v = stage_and_publish(tmp_path, "m")
    (v.path / "metadata.json").write_text(json.dumps({"name": "m"}))
    with pytest.raises(ArtifactError, match="not valid model metadata"):
        model_store.load_metadata(v.path)
    (v.path / "metadata.json").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        model_store.load_metadata(v.path)


@pytest.mark.parametrize("bad", ["", "../up", "a/b", ".hidden", "x" * 200])
def test_model_names_must_be_safe_folder_names(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        model_store.validate_name(bad)
