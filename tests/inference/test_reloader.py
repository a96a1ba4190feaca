"""The hot reloader with fake classifiers and loaders: no TensorFlow, no wall-clock waits
beyond bounded polling."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from service.errors import ArtifactError, ReloadRejected, ServiceUnavailable
from service.model_store import ModelVersion
from service.serving.inference import reloader as reloader_module
from service.serving.inference.classifier import Classifier
from service.serving.inference.reloader import ModelReloader
from service.serving.inference.runtime import Runtime
from service.serving.settings import Settings
from tests.support.fakes import SIZE, FakeClassifier


class VersionedFake(FakeClassifier):
    def __init__(self, version: int) -> None:
        super().__init__()
        self.version = version
        self.metadata = self.metadata.model_copy(update={"version": version})


class Harness:
    """A served runtime, a store folder and a loader whose behaviour each test decides."""

    def __init__(self, store: Path, *, pinned: bool = False, retire_timeout: float = 5.0) -> None:
        self.store = store
        self.settings = Settings(model_store=store, model_name="fake", decode_threads=1)
        self.runtime = Runtime.start(VersionedFake(1), self.settings)
        self.loads: list[int] = []
        self.broken: set[int] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        self.reloader = ModelReloader(
            store=store,
            name="fake",
            current=lambda: self.runtime,
            install=self.install,
            start=lambda classifier: Runtime.start(classifier, self.settings),
            load=self.load,
            pinned=pinned,
            retire_timeout=retire_timeout,
        )

    def install(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def load(self, version: ModelVersion) -> Classifier:
        self.loads.append(version.version)
        self.entered.release()
        assert self.gate.wait(10), "the test never opened the gate"
        if version.version in self.broken:
            raise ArtifactError(f"{version.path}/model.keras is not a loadable Keras model")
        return VersionedFake(version.version)

    def publish(self, version: int, *, broken: bool = False) -> Path:
        folder = self.store / "fake" / str(version)
        folder.mkdir(parents=True)
        if broken:
            self.broken.add(version)
        return folder

    async def close(self) -> None:
        await self.reloader.close()
        await self.runtime.close()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` on the loop, for at most 10 s."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def predict(runtime: Runtime) -> np.ndarray:
    return await runtime.batcher.predict(np.zeros((1, *SIZE, 3), np.float32), ["red"])


def test_newer_version_is_swapped_in_and_the_old_one_closes_after_its_requests(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        old = h.runtime
        h.publish(2)
        with old.use():  # a request in flight on version 1
            outcome = await h.reloader.reload()
            assert (outcome.version, outcome.previous_version, outcome.reloaded) == (2, 1, True)
            assert h.runtime is not old and h.runtime.classifier.version == 2
            # The request that started on version 1 still finishes on it.
            assert (await predict(old)).shape == (1, 3)
            assert old.in_flight.count == 1
        await h.close()
        with pytest.raises(ServiceUnavailable):  # retired once its request ended
            await predict(old)
        assert h.loads == [2]

    run(body)


def test_broken_version_is_rejected_logged_and_never_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    listings: list[int] = []
    real_list = reloader_module.list_versions

    def counting_list(root: Path, name: str) -> list[int]:
        listings.append(1)
        return real_list(root, name)

    monkeypatch.setattr(reloader_module, "list_versions", counting_list)

    async def body() -> None:
        h = Harness(tmp_path)
        served = h.runtime
        h.publish(2, broken=True)
        with caplog.at_level(logging.WARNING, logger="mmserve.reload"):
            with pytest.raises(ReloadRejected) as rejected:
                await h.reloader.reload()
            assert "version 2" in rejected.value.message
            assert "not a loadable Keras model" in rejected.value.message
            assert rejected.value.status_code == 409
            assert h.runtime is served
            (record,) = [r for r in caplog.records if r.name == "mmserve.reload"]
            assert record.levelno == logging.ERROR
            assert "fake version 2" in record.getMessage()
            assert "not a loadable Keras model" in record.getMessage()
            assert "version 1 keeps serving" in record.getMessage()

            # Neither the endpoint nor the watcher loads it again, however often they look.
            with pytest.raises(ReloadRejected):
                await h.reloader.reload()
            h.reloader.watch(0.001)
            seen = len(listings)
            await eventually(lambda: len(listings) >= seen + 20, "20 watcher polls")
            assert h.loads == [2]
            assert set(h.reloader.rejected) == {2}
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1  # one line when rejected, none per poll
            assert (await predict(h.runtime)).shape == (1, 3)
        await h.close()

    run(body)


def test_a_replaced_folder_is_tried_again(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        folder = h.publish(2, broken=True)
        with pytest.raises(ReloadRejected):
            await h.reloader.reload()
        # Publishing again replaces the folder (a new inode), as an atomic rename does.
        fixed = tmp_path / "fake" / ".staging"
        fixed.mkdir()
        folder.rename(tmp_path / "fake" / ".old")
        fixed.rename(folder)
        h.broken.clear()
        outcome = await h.reloader.reload()
        assert outcome.reloaded and h.runtime.classifier.version == 2
        assert h.loads == [2, 2]
        await h.close()

    run(body)


def test_falls_back_to_a_good_version_below_a_broken_newest(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        h.publish(2)
        h.publish(3, broken=True)
        outcome = await h.reloader.reload()
        assert (outcome.version, outcome.reloaded) == (2, True)
        assert "version 3" in outcome.message and "rejected" in outcome.message
        assert h.loads == [3, 2]
        # Nothing newer is loadable now: a 409 that names the rejected version, no new load.
        with pytest.raises(ReloadRejected, match="version 3"):
            await h.reloader.reload()
        assert h.loads == [3, 2]
        await h.close()

    run(body)


def test_nothing_newer_and_pinned_versions_do_not_reload(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        h.publish(1)
        outcome = await h.reloader.reload()
        assert (outcome.version, outcome.reloaded) == (1, False)
        assert "newest" in outcome.message
        await h.close()

        pinned = Harness(tmp_path / "pinned", pinned=True)
        pinned.publish(5)
        pinned.reloader.watch(0.001)
        assert not pinned.reloader.watching
        outcome = await pinned.reloader.reload()
        assert (outcome.version, outcome.reloaded) == (1, False)
        assert "pinned" in outcome.message
        assert pinned.loads == []
        await pinned.close()

    run(body)


def test_only_one_reload_runs_at_a_time(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        h.gate.clear()
        h.publish(2)
        first = asyncio.create_task(h.reloader.reload())
        assert await asyncio.to_thread(h.entered.acquire, True, 10)
        second = asyncio.create_task(h.reloader.reload())
        await asyncio.sleep(0)
        assert not second.done()
        h.gate.set()
        one, two = await asyncio.gather(first, second)
        assert (one.reloaded, one.version) == (True, 2)
        assert (two.reloaded, two.version) == (False, 2)  # it found version 2 already served
        assert h.loads == [2]
        await h.close()

    run(body)


def test_watcher_follows_new_versions_and_stops_cleanly(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        first = h.runtime
        h.reloader.watch(0.01)
        assert h.reloader.watching
        h.publish(2)
        await eventually(lambda: h.runtime.classifier.version == 2, "version 2 served")
        h.publish(3)
        await eventually(lambda: h.runtime.classifier.version == 3, "version 3 served")
        await h.close()
        assert not h.reloader.watching
        with pytest.raises(ServiceUnavailable):  # both old runtimes were retired
            await predict(first)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert h.loads == [2, 3]

    run(body)


def test_watcher_survives_an_unexpected_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_list = reloader_module.list_versions
    failures = [OSError("the store's disk went away")]

    def flaky_list(root: Path, name: str) -> list[int]:
        if failures:
            raise failures.pop()
        return real_list(root, name)

    monkeypatch.setattr(reloader_module, "list_versions", flaky_list)

    async def body() -> None:
        h = Harness(tmp_path)
        h.publish(2)
        h.reloader.watch(0.01)
        await eventually(lambda: h.runtime.classifier.version == 2, "version 2 served")
        await h.close()

    run(body)
    assert "still watching" in caplog.text and "disk went away" in caplog.text


def test_a_stuck_request_does_not_keep_an_old_version_forever(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        h = Harness(tmp_path, retire_timeout=0.05)
        old = h.runtime
        h.publish(2)
        with old.use():  # never released before the bound
            await h.reloader.reload()
            await h.reloader.close()
            with pytest.raises(ServiceUnavailable):
                await predict(old)
        await h.runtime.close()

    run(body)
    assert "1 requests still use fake version 1" in caplog.text
