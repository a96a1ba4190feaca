"""Manifest parsing, validation errors that name the row, and the stratified split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.training.dataset import ManifestError, assign_splits, load_dataset, read_manifest


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (20, 20), (i * 20, 0, 0)).save(folder / f"{i}.png")
    return folder


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_csv_with_relative_paths(tmp_path: Path, images: Path) -> None:
    m = write_csv(
        tmp_path / "m.csv", "image,text,label", [f"imgs/{i}.png,caption {i},a" for i in range(3)]
    )
    rows = read_manifest(m)
    assert [r.image for r in rows] == [images / f"{i}.png" for i in range(3)]
    assert rows[0].text == "caption 0" and rows[0].label == "a" and rows[0].split is None


def test_jsonl_with_file_name_and_absolute_paths(tmp_path: Path, images: Path) -> None:
    m = tmp_path / "metadata.jsonl"
    m.write_text(
        "\n".join(
            json.dumps(
                {
                    "file_name": str(images / f"{i}.png"),
                    "text": "t",
                    "label": 1,
                    "split": "validation",
                }
            )
            for i in range(2)
        )
        + "\n"
    )
    rows = read_manifest(m)
    assert rows[1].image == images / "1.png"
    assert rows[0].label == "1" and rows[0].split == "val"


def test_missing_columns_are_named(tmp_path: Path) -> None:
    m = write_csv(tmp_path / "m.csv", "path,caption,label", ["x.png,t,a"])
    with pytest.raises(ManifestError, match=r"missing column\(s\) image, text"):
        read_manifest(m)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("imgs/0.png,,a", "line 2: empty text"),
        ("imgs/0.png,hello,", "line 2: empty label"),
        (",hello,a", "line 2: empty image"),
        ("imgs/nope.png,hello,a", "line 2: image not found"),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, images: Path, row: str, message: str) -> None:
    m = write_csv(tmp_path / "m.csv", "image,text,label", [row])
    with pytest.raises(ManifestError, match=message):
        read_manifest(m)


def test_every_problem_is_reported_at_once(tmp_path: Path, images: Path) -> None:
    m = write_csv(
        tmp_path / "m.csv", "image,text,label", ["imgs/0.png,,a", "imgs/1.png,t,", "imgs/2.png,t,a"]
    )
    with pytest.raises(ManifestError) as err:
        read_manifest(m)
    assert "line 2: empty text" in str(err.value) and "line 3: empty label" in str(err.value)


def test_unknown_split_value(tmp_path: Path, images: Path) -> None:
    m = write_csv(tmp_path / "m.csv", "image,text,label,split", ["imgs/0.png,t,a,holdout"])
    with pytest.raises(ManifestError, match="line 2: unknown split 'holdout'"):
        read_manifest(m)


def test_unreadable_image_is_named(tmp_path: Path, images: Path) -> None:
    (images / "bad.png").write_bytes(b"this is not a png")
    rows = [f"imgs/{i}.png,t,{'ab'[i % 2]}" for i in range(10)] + ["imgs/bad.png,t,a"]
    m = write_csv(tmp_path / "m.csv", "image,text,label", rows)
    with pytest.raises(ManifestError, match=r"line 12: unreadable image .*bad\.png"):
        load_dataset(m, (8, 8), seed=0, progress=lambda _m: None)


def test_class_too_small_to_split(tmp_path: Path, images: Path) -> None:
    rows = [f"imgs/{i}.png,t,a" for i in range(6)] + ["imgs/6.png,t,rare", "imgs/7.png,t,rare"]
    with pytest.raises(ManifestError, match="class 'rare' has 2 example"):
        assign_splits(read_manifest(write_csv(tmp_path / "m.csv", "image,text,label", rows)), 0)


def test_split_column_must_cover_train_val_test(tmp_path: Path, images: Path) -> None:
    rows = ["imgs/0.png,t,a,train", "imgs/1.png,t,a,test"]
    m = write_csv(tmp_path / "m.csv", "image,text,label,split", rows)
    with pytest.raises(ManifestError, match="the val split is empty"):
        assign_splits(read_manifest(m), 0)


def test_label_unseen_in_training_is_refused(tmp_path: Path, images: Path) -> None:
    rows = ["imgs/0.png,t,a,train", "imgs/1.png,t,a,val", "imgs/2.png,t,b,test"]
    m = write_csv(tmp_path / "m.csv", "image,text,label,split", rows)
    with pytest.raises(ManifestError, match="label 'b' appears in test but not in train"):
        assign_splits(read_manifest(m), 0)


def test_stratified_split_is_seeded_and_keeps_every_class_everywhere(
    tmp_path: Path, images: Path
) -> None:
    rows = [f"imgs/{i % 12}.png,t{i},{'abc'[i % 3]}" for i in range(90)]
    parsed = read_manifest(write_csv(tmp_path / "m.csv", "image,text,label", rows))
    first, _ = assign_splits(parsed, seed=7)
    again, _ = assign_splits(parsed, seed=7)
    other, _ = assign_splits(parsed, seed=8)
    assert list(first) == list(again) and list(first) != list(other)
    for split, expected in (("train", 24), ("val", 3), ("test", 3)):
        for label in "abc":
            n = sum(
                1 for r, s in zip(parsed, first, strict=True) if s == split and r.label == label
            )
            assert n == expected


def test_load_dataset_decodes_through_preprocessing(tmp_path: Path, images: Path) -> None:
    rows = [f"imgs/{i}.png,t{i},{'ab'[i % 2]}" for i in range(12)]
    ds = load_dataset(
        write_csv(tmp_path / "m.csv", "image,text,label", rows),
        (8, 8),
        seed=0,
        progress=lambda _m: None,
    )
    assert ds.images.shape == (12, 8, 8, 3) and ds.images.dtype == np.uint8
    assert ds.images[3, 0, 0].tolist() == [60, 0, 0]
    assert ds.labels == ["a", "b"]
    assert len(ds.fingerprint) == 64


def test_trainer_help_does_not_import_tensorflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from service.training.cli import build_parser\n"
        "build_parser().format_help()\n"
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
