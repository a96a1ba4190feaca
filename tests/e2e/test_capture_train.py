"""Captured traffic, end to end: `mmserve serve` (two workers) captures every request of the
real model; the rows, once labelled, train a new model with `mmserve-train` unchanged."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from service import model_store
from tests.support.servers import ROOT, cli_server_command, running_server, server_env

pytestmark = pytest.mark.slow

PER_CLASS = 6


def test_a_labelled_capture_trains_with_mmserve_train(
    trained_store: Path, demo_manifest: Path, tmp_path: Path
) -> None:
    with demo_manifest.open(newline="") as fh:
        by_class: dict[str, list[dict[str, str]]] = defaultdict(list)
        for row in csv.DictReader(fh):
            if len(by_class[row["label"]]) < PER_CLASS:
                by_class[row["label"]].append(row)
    sent = [row for rows in by_class.values() for row in rows]
    truth: dict[str, str] = {}
    folder = tmp_path / "captured"
    settings = {"MMSERVE_CAPTURE_DIR": str(folder), "MMSERVE_CAPTURE_RATE": "1.0"}
    settings["MMSERVE_WORKERS"] = "2"
    with running_server(trained_store, tmp_path, cli_server_command, settings) as (url, _):
        for n, row in enumerate(sent):
            request_id = f"demo-{n}"
            truth[request_id] = row["label"]
            response = httpx.post(
                f"{url}/v1/predict",
                files={"image": ("x.jpg", (demo_manifest.parent / row["image"]).read_bytes())},
                data={"text": row["text"]},
                headers={"X-Request-ID": request_id},
                timeout=30,
            )
            assert response.status_code == 200, response.text
    # Stopped: every worker closed its segment. A person labels the rows (here: the
    # demo's true labels) and joins the segments into one manifest.
    rows = [
        json.loads(line)
        for segment in sorted(folder.glob("capture-*.jsonl"))
        for line in segment.read_text(encoding="utf-8").splitlines()
    ]
    assert sorted(r["request_id"] for r in rows) == sorted(truth)
    assert {r["label"] for r in rows} == {""}
    manifest = folder / "labelled.jsonl"
    manifest.write_text(
        "".join(json.dumps({**r, "label": truth[r["request_id"]]}) + "\n" for r in rows),
        encoding="utf-8",
    )
    store = tmp_path / "store"
    trainer = Path(sys.executable).parent / "mmserve-train"
    done = subprocess.run(
        [
            str(trainer),
            *("--data", str(manifest), "--model-store", str(store), "--name", "captured"),
            *("--epochs", "1", "--image-size", "32", "--batch-size", "8"),
        ],
        cwd=ROOT,
        env=server_env(store),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert model_store.list_versions(store, "captured") == [1]
    version = model_store.resolve(store, "captured")
    metadata = json.loads((version.path / "metadata.json").read_text())
    assert sorted(metadata["labels"]) == sorted(by_class)
    assert sum(metadata["dataset"]["counts"]["test"].values()) > 0
