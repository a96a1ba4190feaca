"""Captured traffic (a manifest of sampled requests) and the drift metrics, on the fake model."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from service.serving.app import create_app
from service.serving.capture import CaptureWriter
from service.serving.capture.segments import BLOCK, SegmentStore, folder_usage
from service.serving.settings import Settings
from service.training.dataset import read_manifest
from tests.support.fakes import BLUE, LABELS, RED, FakeClassifier, expected, image_bytes
from tests.support.probes import poll

SECRET = "sekrit-key-0123456789"


def _rows(folder: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path in sorted(folder.glob("capture-*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _capture_settings(settings: Settings, folder: Path, **kw: object) -> Settings:
    return settings.model_copy(update={"capture_dir": folder, "capture_rate": 1.0, **kw})


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "captured"


@pytest.fixture
def keyed(settings: Settings, folder: Path) -> Settings:
    """Settings that capture every request and require an API key."""
    fields = settings.model_dump(exclude={"api_keys", "api_keys_file"})
    return Settings(**{**fields, "api_keys": SECRET, "capture_dir": folder, "capture_rate": 1.0})


def test_sampled_requests_become_a_manifest_without_headers_or_keys(
    keyed: Settings, fake: FakeClassifier, folder: Path
) -> None:
    red, blue = image_bytes(RED), image_bytes(BLUE, fmt="JPEG")
    with TestClient(create_app(keyed, classifier=fake)) as client:
        one = client.post(
            "/v1/predict",
            files={"image": ("a.png", red)},
            data={"text": "a red thing"},
            headers={"Authorization": f"Bearer {SECRET}", "X-Request-ID": "req-one"},
        )
        batch = client.post(
            "/v1/predict/batch",
            json={
                "instances": [
                    {"image": {"b64": _b64(red)}, "text": "plain"},
                    {"image": {"b64": _b64(blue)}, "text": "something blue"},
                ]
            },
            headers={"X-API-Key": SECRET, "X-Request-ID": "req-two"},
        )
        assert one.status_code == 200 and batch.status_code == 200
    # The lifespan's end wrote what was queued and closed the open segment.
    rows = sorted(_rows(folder), key=lambda r: (str(r["request_id"]), int(str(r["item"]))))
    assert [(r["request_id"], r["item"], r["text"]) for r in rows] == [
        ("req-one", 0, "a red thing"),
        ("req-two", 0, "plain"),
        ("req-two", 1, "something blue"),
    ]
    for row, data in zip(rows, (red, red, blue), strict=True):
        want = expected(data, str(row["text"]))
        probabilities = row["probabilities"]
        assert isinstance(probabilities, dict) and list(probabilities) == LABELS
        np.testing.assert_allclose(list(probabilities.values()), want, atol=1e-6)
        assert row["predicted"] == LABELS[int(np.argmax(want))]
        assert (row["label"], row["model"], row["version"]) == ("", "fake", 3)
        datetime.fromisoformat(str(row["time"]))
        assert (folder / str(row["image"])).read_bytes() == data
    assert str(rows[2]["image"]).endswith(".jpg") and str(rows[0]["image"]).endswith(".png")

    everything = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    for secret in (SECRET.encode(), b"Bearer", b"authorization", b"x-api-key"):
        assert secret.lower() not in everything.lower()
    assert not list(folder.rglob("*.tmp")), "every file was renamed into place"

    # Once labelled, each segment is a manifest the trainer accepts.
    for segment in folder.glob("capture-*.jsonl"):
        labelled = [{**r, "label": r["predicted"]} for r in map(json.loads, segment.open())]
        segment.write_text("".join(json.dumps(r) + "\n" for r in labelled))
        assert [row.label for row in read_manifest(segment)] == [r["label"] for r in labelled]


def test_capture_is_off_without_a_folder_or_at_rate_zero(
    settings: Settings, fake: FakeClassifier, folder: Path
) -> None:
    for off in (settings, _capture_settings(settings, folder, capture_rate=0.0)):
        with TestClient(create_app(off, classifier=fake)) as client:
            response = client.post(
                "/v1/predict", files={"image": ("a.png", image_bytes())}, data={"text": "x"}
            )
            assert response.status_code == 200
    assert not folder.exists()


def test_an_unusable_folder_fails_start_up(
    settings: Settings, fake: FakeClassifier, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    app = create_app(_capture_settings(settings, not_a_folder), classifier=fake)
    with pytest.raises(Exception, match="cannot capture to"), TestClient(app):
        pass


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_the_rate_is_a_fraction(rate: float) -> None:
    with pytest.raises(ValidationError, match="capture_rate"):
        Settings(capture_rate=rate)


def test_a_full_queue_drops_and_counts_and_pairs_without_both_modalities_are_skipped(
    folder: Path,
) -> None:
    image = image_bytes()
    writer = CaptureWriter(folder, 1.0, 1024**2, 60.0, queue_bytes=len(image) + 10)
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    dropped = _count("mmserve_capture_dropped_total", reason="queue_full")
    incomplete = _count("mmserve_capture_dropped_total", reason="incomplete")
    written = _count("mmserve_capture_written_total")
    pairs: list[tuple[bytes | None, str | None]] = [(None, "text"), (image, None), (image, "x")]
    writer.submit("m", 1, LABELS, "r1", pairs, probabilities)
    # Not started: the first request's pair waits in the queue, the second's does not fit.
    writer.submit("m", 1, LABELS, "r2", [(image, "y")], probabilities[:1])
    assert _count("mmserve_capture_dropped_total", reason="queue_full") - dropped == 1
    assert _count("mmserve_capture_dropped_total", reason="incomplete") - incomplete == 2
    writer.start()
    writer.close(timeout=10)
    assert _count("mmserve_capture_written_total") - written == 1
    (row,) = _rows(folder)
    assert (row["request_id"], row["item"], row["predicted"]) == ("r1", 2, "blue")


def test_a_running_writer_writes_on_its_own_wakes_and_closes_old_segments(
    folder: Path,
) -> None:
    writer = CaptureWriter(folder, 1.0, 1024**2, segment_s=0.05, queue_bytes=1024**2)
    written = _count("mmserve_capture_written_total")
    writer.start()
    try:
        probabilities = np.array([[0.7, 0.2, 0.1]])
        for n in range(3):
            writer.submit("m", 1, LABELS, f"r{n}", [(image_bytes(), f"t{n}")], probabilities)
        # No close: the writer's own wakes write the pairs and close the segment by age.
        poll(lambda: len(_rows(folder)) == 3, "three rows in closed segments")
        assert _count("mmserve_capture_written_total") - written == 3
        assert [r["request_id"] for r in _rows(folder)] == ["r0", "r1", "r2"]
    finally:
        writer.close(timeout=10)


def test_the_disk_budget_holds_and_the_oldest_segments_go_first(folder: Path) -> None:
    budget = 1024**2
    store = SegmentStore(folder, budget, segment_s=3600, worker=1, workers=2)
    store.adopt()
    image = np.random.default_rng(0).bytes(20_000)  # incompressible, like a photo
    for n in range(200):
        store.write(image, "jpg", {"text": f"row {n}", "label": ""})
        # (the open segment's rows are counted when written, before they reach the disk)
        assert folder_usage(folder) <= store.used <= budget // 2
    store.close_open()
    assert store.pruned > 0
    texts = [str(r["text"]) for r in _rows(folder)]
    assert texts == [f"row {n}" for n in range(200 - len(texts), 200)], "newest kept, in order"
    images = {str(r["image"]).split("/")[1] for r in _rows(folder)}
    assert images == {p.name for p in (folder / "images").iterdir()}, "no orphaned images"


def test_deleted_segments_lend_their_emptied_folders_to_the_next_images(folder: Path) -> None:
    rng = np.random.default_rng(1)
    sent: dict[str, bytes] = {}

    def write(store: SegmentStore, n: int, extension: str = "jpg") -> None:
        # Sizes that go up and down, so that a reused file that kept a longer past shows.
        image = rng.bytes(int(rng.integers(1_000, 40_000)))
        sent[f"row {n}"] = image
        store.write(image, extension, {"text": f"row {n}", "label": ""})

    def spare_files() -> list[Path]:
        return [p for p in store.spare_folder.rglob("*") if p.is_file()]

    store = SegmentStore(folder, 1024**2, segment_s=3600)
    store.adopt()
    written: set[int] = set()  # inode numbers of every image file written so far
    for n in range(120):
        # Now and then a PNG, whose name the emptied JPEG of the same row does not have.
        write(store, n, "png" if n % 17 == 5 else "jpg")
        written |= {p.stat().st_ino for p in (folder / "images").rglob("*.*")}
        assert len(list(store.spare_folder.iterdir())) <= 2
        assert all(p.stat().st_size == 0 for p in spare_files()), "a spare holds no bytes"
        assert folder_usage(folder) <= store.used <= 1024**2
    store.close_open()
    assert store.pruned > 0
    rows = _rows(folder)
    for row in rows:
        assert (folder / str(row["image"])).read_bytes() == sent[str(row["text"])]
    named = {str(row["image"]) for row in rows}
    on_disk = {str(p.relative_to(folder)) for p in (folder / "images").rglob("*") if p.is_file()}
    assert on_disk == named, "a closed segment's folder holds its images and nothing else"
    assert len(written) < 120, "later images were written into earlier files"
    kept = {(folder / name).stat().st_ino for name in named}
    made = {p.stat().st_ino for p in spare_files()}
    assert made, "deleted segments left emptied files to reuse"
    # A restart takes the spares over and writes into them first.
    again = SegmentStore(folder, 1024**2, segment_s=3600)
    again.adopt()
    write(again, 120)
    again.close_open()
    newest = folder / str(_rows(folder)[-1]["image"])
    assert newest.read_bytes() == sent["row 120"]
    assert newest.stat().st_ino in made - kept


def test_spares_are_taken_over_emptied_and_those_of_workers_beyond_the_count_deleted(
    folder: Path,
) -> None:
    spare = folder / ".spare-w1" / "a-1"
    spare.mkdir(parents=True)
    (spare / "000001.png").write_bytes(b"")
    (spare / "000002.png").write_bytes(b"left by a crash")  # not empty: deleted
    (folder / ".spare-w1" / "loose").write_bytes(b"")  # not a folder: deleted
    (folder / ".spare-w3" / "b-1").mkdir(parents=True)  # a worker beyond the count of 2
    SegmentStore(folder, 1024**2, segment_s=60, worker=0, workers=2).adopt()
    assert not (folder / ".spare-w3").exists()
    assert (spare / "000002.png").exists(), "worker 1's own, until worker 1 starts"
    one = SegmentStore(folder, 1024**2, segment_s=60, worker=1, workers=2)
    one.adopt()
    assert [p.name for p in one.spare_folder.iterdir()] == ["a-1"]
    assert [p.name for p in spare.iterdir()] == ["000001.png"]
    inode = (spare / "000001.png").stat().st_ino
    one.write(image_bytes(), "png", {"text": "t", "label": ""})
    one.close_open()
    (row,) = _rows(folder)
    assert (folder / str(row["image"])).stat().st_ino == inode
    assert (folder / str(row["image"])).read_bytes() == image_bytes()
    assert not one.spare_folder.joinpath("a-1").exists(), "the folder itself was taken over"


def test_a_segment_closes_when_old_and_a_restart_drops_only_its_unfinished_one(
    folder: Path,
) -> None:
    image = image_bytes()
    first = SegmentStore(folder, 1024**2, segment_s=0, worker=0, workers=2)
    first.adopt()
    first.write(image, "png", {"text": "kept", "label": ""})
    first.close_if_old()  # open for longer than 0 s
    first.write(image, "png", {"text": "unfinished", "label": ""})
    other = SegmentStore(folder, 1024**2, segment_s=3600, worker=1, workers=2)
    other.adopt()
    other.write(image, "png", {"text": "another worker's", "label": ""})
    # The first process stops without closing its segment; its successor takes over.
    again = SegmentStore(folder, 1024**2, segment_s=3600, worker=0, workers=2)
    again.adopt()
    assert [r["text"] for r in _rows(folder)] == ["kept"]
    # What is on disk, less the other worker's open segment (its row not yet flushed).
    assert again.used == folder_usage(folder) - (other.used - BLOCK)
    other.close_open()
    assert sorted(str(r["text"]) for r in _rows(folder)) == ["another worker's", "kept"]


def test_drift_metrics_per_version_with_the_test_split_as_reference(
    settings: Settings, fake: FakeClassifier
) -> None:
    fake.metadata = fake.metadata.model_copy(
        update={"dataset": {"counts": {"train": {"red": 9}, "test": {"red": 2, "blue": 2}}}}
    )
    key = {"model": "fake", "version": "3"}
    before = {
        "red": _count("mmserve_predicted_class_total", **key, label="red"),
        "blue": _count("mmserve_predicted_class_total", **key, label="blue"),
        "both": _count("mmserve_request_modalities_total", **key, modalities="image+text"),
        "sure": _count("mmserve_top_probability_bucket", **key, le="0.5"),
        "all": _count("mmserve_top_probability_count", **key),
    }
    with TestClient(create_app(settings, classifier=fake)) as client:
        batch = client.post(
            "/v1/predict/batch",
            json={
                "instances": [
                    {"image": {"b64": _b64(image_bytes(RED))}, "text": "red"},
                    {"image": {"b64": _b64(image_bytes(RED))}, "text": "red"},
                    {"image": {"b64": _b64(image_bytes(BLUE))}, "text": "blue"},
                ]
            },
        )
        assert batch.status_code == 200
        tops = [
            max(r["predictions"], key=lambda p: p["probability"]) for r in batch.json()["results"]
        ]
        exposition = client.get("/metrics").text
    assert [t["label"] for t in tops] == ["red", "red", "blue"]
    assert _count("mmserve_predicted_class_total", **key, label="red") - before["red"] == 2
    assert _count("mmserve_predicted_class_total", **key, label="blue") - before["blue"] == 1
    assert (
        _count("mmserve_request_modalities_total", **key, modalities="image+text") - before["both"]
        == 3
    )
    assert _count("mmserve_top_probability_count", **key) - before["all"] == 3
    at_most_half = sum(t["probability"] <= 0.5 for t in tops)
    assert (
        _count("mmserve_top_probability_bucket", **key, le="0.5") - before["sure"] == at_most_half
    )
    reference = {
        sample.labels["label"]: sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "mmserve_reference_class_fraction"
        for sample in family.samples
        if sample.labels["model"] == "fake"
    }
    assert reference == {"red": 0.5, "green": 0.0, "blue": 0.5}


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
