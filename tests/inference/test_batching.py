"""The adaptive batcher, driven deterministically: a gated fake model decides when each
model call may finish, so no test depends on how fast anything runs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from service.errors import DeadlineExceeded, QueueFull, ServiceUnavailable
from service.serving.inference.batching import AdaptiveBatcher


class GatedModel:
    """Records each call's texts; each call blocks until the test opens the gate."""

    def __init__(self, gated: bool = True) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Semaphore(0)
        self.gate = threading.Event()
        if not gated:
            self.gate.set()

    def __call__(self, images: np.ndarray, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.entered.release()
        assert self.gate.wait(10), "the test never opened the gate"
        if "boom" in texts:
            raise RuntimeError("this batch holds a poisoned item")
        # Each row depends only on its own input, so a mis-split result would show.
        return np.stack([[len(t), float(img.mean())] for t, img in zip(texts, images, strict=True)])

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.acquire, True, 10), "model never called"


def pixels(value: float = 0.0) -> np.ndarray:
    return np.full((1, 2, 2, 3), value, np.float32)


def item(text: str, value: float = 0.0) -> tuple[np.ndarray, list[str]]:
    return np.full((1, 2, 2, 3), value, np.float32), [text]


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


async def queued(batcher: AdaptiveBatcher, n: int) -> None:
    """Yield to the loop until ``n`` items are waiting (no wall-clock assumptions)."""
    for _ in range(10_000):
        if batcher.queued_items >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"only {batcher.queued_items} items queued, expected {n}")


def test_lone_request_runs_at_once_with_its_own_result() -> None:
    async def body() -> None:
        model = GatedModel(gated=False)
        batcher = AdaptiveBatcher(model, max_batch_size=8, max_batch_delay=0)
        out = await batcher.predict(*item("abc", 2.0))
        assert out.tolist() == [[3.0, 2.0]]
        assert model.calls == [["abc"]]
        await batcher.close()

    run(body)


def test_requests_arriving_while_busy_form_one_batch() -> None:
    async def body() -> None:
        model = GatedModel()
        batcher = AdaptiveBatcher(model, max_batch_size=8)
        first = asyncio.create_task(batcher.predict(*item("a", 1)))
        await model.wait_entered()
        rest = [asyncio.create_task(batcher.predict(*item("b" * k, k))) for k in (2, 3, 4)]
        await queued(batcher, 3)
        model.gate.set()
        assert (await first).tolist() == [[1, 1]]
        results = [(await t).tolist() for t in rest]
        assert results == [[[2, 2]], [[3, 3]], [[4, 4]]]
        assert model.calls == [["a"], ["bb", "bbb", "bbbb"]]
        assert batcher.stats.sizes == [1, 3]
        await batcher.close()

    run(body)


def test_batches_never_exceed_max_batch_size() -> None:
    async def body() -> None:
        model = GatedModel()
        batcher = AdaptiveBatcher(model, max_batch_size=4)
        first = asyncio.create_task(batcher.predict(*item("x")))
        await model.wait_entered()
        rest = [asyncio.create_task(batcher.predict(*item(str(k)))) for k in range(6)]
        await queued(batcher, 6)
        model.gate.set()
        await asyncio.gather(first, *rest)
        assert [len(c) for c in model.calls] == [1, 4, 2]
        await batcher.close()

    run(body)


def test_full_queue_answers_503_with_retry_after_and_recovers() -> None:
    async def body() -> None:
        model = GatedModel()
        batcher = AdaptiveBatcher(model, max_queue_items=2, retry_after=3)
        running = asyncio.create_task(batcher.predict(*item("r")))
        await model.wait_entered()
        waiting = [asyncio.create_task(batcher.predict(*item(t))) for t in ("q1", "q2")]
        await queued(batcher, 2)
        assert not batcher.refusing
        with pytest.raises(QueueFull) as err:
            await batcher.predict(*item("one too many"))
        assert err.value.status_code == 503 and err.value.retry_after == 3
        assert batcher.refusing  # saturated, for callers that choose their way by it
        model.gate.set()
        await asyncio.gather(running, *waiting)
        assert (await batcher.predict(*item("later"))).shape == (1, 2)
        await batcher.close()

    run(body)


def test_admitted_requests_count_as_queued_until_they_reach_the_queue() -> None:
    async def body() -> None:
        model = GatedModel()
        batcher = AdaptiveBatcher(model, max_queue_items=2)
        running = asyncio.create_task(batcher.predict(*item("r")))
        await model.wait_entered()  # the model's batch is not counted
        reached = asyncio.Event()

        async def admitted_request(text: str) -> np.ndarray:
            with batcher.admitted():
                await reached.wait()  # its body being read, its images decoded
                return await batcher.predict(*item(text))

        with batcher.admitted():  # a request that ends before the queue (a 4xx, say)
            assert batcher.admitted_requests == 1 and not batcher.full
        assert batcher.admitted_requests == 0
        on_their_way = [asyncio.create_task(admitted_request(t)) for t in ("a1", "a2")]
        for _ in range(100):
            await asyncio.sleep(0)
        assert (batcher.queued_items, batcher.admitted_requests, batcher.full) == (0, 2, True)
        reached.set()
        await queued(batcher, 2)
        # Queued now, each counted once: as an item, no longer as an admitted request.
        assert (batcher.queued_items, batcher.admitted_requests, batcher.full) == (2, 0, True)
        model.gate.set()
        await asyncio.gather(running, *on_their_way)
        assert (batcher.queued_items, batcher.admitted_requests, batcher.full) == (0, 0, False)
        await batcher.close()

    run(body)


def test_deadline_gives_504_and_the_expired_item_never_runs() -> None:
    async def body() -> None:
        model = GatedModel()
        batcher = AdaptiveBatcher(model, timeout=0.05)
        running = asyncio.create_task(batcher.predict(*item("slow")))
        await model.wait_entered()
        # The model is held, so this request cannot be answered before its deadline.
        with pytest.raises(DeadlineExceeded) as err:
            await batcher.predict(*item("late"))
        assert err.value.status_code == 504
        model.gate.set()
        with pytest.raises(DeadlineExceeded):
            await running  # it, too, outlived its deadline while the gate was shut
        assert model.calls == [["slow"]]
        await batcher.close()

    run(body)


def test_one_failing_item_does_not_fail_the_others() -> None:
    async def body() -> None:
        model = GatedModel()
        batcher = AdaptiveBatcher(model, max_batch_size=8)
        first = asyncio.create_task(batcher.predict(*item("first")))
        await model.wait_entered()
        tasks = [asyncio.create_task(batcher.predict(*item(t))) for t in ("ok1", "boom", "ok2")]
        await queued(batcher, 3)
        model.gate.set()
        await first
        results: list[Any] = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[0].tolist() == [[3, 0]] and results[2].tolist() == [[3, 0]]
        assert isinstance(results[1], RuntimeError)
        assert model.calls[1] == ["ok1", "boom", "ok2"]  # tried together, then one by one
        assert model.calls[2:] == [["ok1"], ["boom"], ["ok2"]]
        await batcher.close()

    run(body)


def test_cancelled_request_is_dropped_before_the_model() -> None:
    async def body() -> None:
        model = GatedModel()
        batcher = AdaptiveBatcher(model)
        first = asyncio.create_task(batcher.predict(*item("first")))
        await model.wait_entered()
        gone = asyncio.create_task(batcher.predict(*item("client went away")))
        kept = asyncio.create_task(batcher.predict(*item("kept")))
        await queued(batcher, 2)
        gone.cancel()
        await asyncio.wait({gone})  # gone before the model thread takes the next batch
        model.gate.set()
        await first
        assert (await kept).tolist() == [[4, 0]]
        assert gone.cancelled()
        assert model.calls == [["first"], ["kept"]]
        await batcher.close()

    run(body)


def test_multi_item_requests_are_split_back_in_order() -> None:
    async def body() -> None:
        model = GatedModel()
        batcher = AdaptiveBatcher(model, max_batch_size=16)
        first = asyncio.create_task(batcher.predict(*item("0")))
        await model.wait_entered()
        a = asyncio.create_task(
            batcher.predict(
                np.stack([np.full((2, 2, 3), v, np.float32) for v in (1, 2, 3)]), ["a", "aa", "aaa"]
            )
        )
        b = asyncio.create_task(batcher.predict(*item("bbbbb", 9)))
        await queued(batcher, 4)
        model.gate.set()
        await first
        assert (await a).tolist() == [[1, 1], [2, 2], [3, 3]]
        assert (await b).tolist() == [[5, 9]]
        await batcher.close()

    run(body)


def test_close_answers_queued_requests_then_refuses_new_ones() -> None:
    async def body() -> None:
        model = GatedModel()
        batcher = AdaptiveBatcher(model)
        running = asyncio.create_task(batcher.predict(*item("r")))
        await model.wait_entered()
        waiting = asyncio.create_task(batcher.predict(*item("w")))
        await queued(batcher, 1)
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0)
        with pytest.raises(ServiceUnavailable):
            await batcher.predict(*item("after close"))
        model.gate.set()
        await closing
        assert (await running).tolist() == [[1, 0]]
        assert (await waiting).tolist() == [[1, 0]]
        assert model.calls == [["r"], ["w"]]

    run(body)


def test_ready_batch_waits_for_announced_requests() -> None:
    async def body() -> None:
        model = GatedModel(gated=False)
        # A delay far longer than the test: only the arrivals can end the wait.
        batcher = AdaptiveBatcher(model, max_batch_size=8, max_batch_delay=60)
        with contextlib.ExitStack() as stack:
            arrivals = [stack.enter_context(batcher.arriving()) for _ in range(3)]
            first = asyncio.create_task(batcher.predict(*item("a"), arrivals[0]))
            for _ in range(20):
                await asyncio.sleep(0)
            # The others are still "decoding" when the first is queued.
            later = [
                asyncio.create_task(batcher.predict(*item(t), a))
                for t, a in zip(("b", "c"), arrivals[1:], strict=True)
            ]
            await asyncio.wait_for(asyncio.gather(first, *later), 10)
        assert model.calls == [["a", "b", "c"]]
        await batcher.close()

    run(body)


def test_requests_announced_during_the_wait_do_not_extend_it() -> None:
    async def body() -> None:
        model = GatedModel(gated=False)
        # A delay far longer than the test: only the arrivals can end the wait.
        batcher = AdaptiveBatcher(model, max_batch_size=8, max_batch_delay=60)
        with batcher.arriving() as first, batcher.arriving() as second:
            ready = asyncio.create_task(batcher.predict(*item("a"), first))
            for _ in range(20):
                await asyncio.sleep(0)
            assert batcher.queued_items == 1  # held for the second, announced before
            # A third is announced while the batch waits; it never arrives in this test.
            with batcher.arriving():
                late = asyncio.create_task(batcher.predict(*item("b"), second))
                done = await asyncio.wait_for(asyncio.gather(ready, late), 10)
        assert [out.tolist() for out in done] == [[[1, 0]], [[1, 0]]]
        assert model.calls == [["a", "b"]]  # ran when the second came, not after 60 s
        await batcher.close()

    run(body)


def test_a_request_queued_behind_a_running_batch_waits_for_those_announced_since() -> None:
    async def body() -> None:
        model = GatedModel()
        # A delay far longer than the test: only the arrival can end the wait.
        batcher = AdaptiveBatcher(model, max_batch_size=8, max_batch_delay=60)
        running = asyncio.create_task(batcher.predict(*item("r")))
        await model.wait_entered()
        behind = asyncio.create_task(batcher.predict(*item("q")))
        await queued(batcher, 1)
        # Announced after "q" was queued, but before the model came free.
        with batcher.arriving() as later:
            model.gate.set()
            await running
            assert not await asyncio.to_thread(model.entered.acquire, True, 0.2), (
                "ran without waiting for the request on its way when the model came free"
            )
            joined = asyncio.create_task(batcher.predict(*item("later"), later))
            await asyncio.wait_for(asyncio.gather(behind, joined), 10)
        assert model.calls == [["r"], ["q", "later"]]
        await batcher.close()

    run(body)


def test_announced_request_that_fails_early_ends_the_wait() -> None:
    async def body() -> None:
        model = GatedModel(gated=False)
        batcher = AdaptiveBatcher(model, max_batch_delay=60)
        with batcher.arriving() as mine:
            with pytest.raises(ValueError), batcher.arriving():
                task = asyncio.create_task(batcher.predict(*item("ok"), mine))
                for _ in range(20):
                    await asyncio.sleep(0)
                assert batcher.queued_items == 1  # queued, held for the other one
                raise ValueError("its image could not be decoded")
            assert (await asyncio.wait_for(task, 10)).tolist() == [[2, 0]]
        await batcher.close()

    run(body)


def test_nothing_waits_when_no_request_is_on_its_way() -> None:
    async def body() -> None:
        model = GatedModel(gated=False)
        batcher = AdaptiveBatcher(model, max_batch_delay=60)
        with batcher.arriving() as arrival:
            out = await asyncio.wait_for(batcher.predict(*item("solo"), arrival), 10)
        assert out.tolist() == [[4, 0]]
        await batcher.close()

    run(body)


# --- requests queued by the thread that decodes their images ------------------------------


def test_a_decoding_thread_queues_its_request_without_the_event_loop() -> None:
    async def body() -> None:
        model = GatedModel(gated=False)
        batcher = AdaptiveBatcher(model, max_batch_size=8)
        with ThreadPoolExecutor(1) as pool:
            task = asyncio.create_task(
                batcher.predict_prepared(lambda: item("x", 5.0)[0], ["x"], pool)
            )
            await asyncio.sleep(0)  # the request is handed to the decoding thread
            # The event loop is blocked here, yet the request reaches the model.
            assert model.entered.acquire(timeout=10), "the model waited for the event loop"
            assert (await task).tolist() == [[1, 5]]
        await batcher.close()

    run(body)


def test_prepared_requests_share_batches_and_raise_their_own_errors() -> None:
    async def body() -> None:
        model = GatedModel()
        batcher = AdaptiveBatcher(model, max_batch_size=8)

        def broken() -> np.ndarray:
            raise ValueError("not an image")

        with ThreadPoolExecutor(2) as pool:
            first = asyncio.create_task(batcher.predict(*item("first")))
            await model.wait_entered()
            ok = [
                asyncio.create_task(
                    batcher.predict_prepared(functools.partial(pixels, v), [t], pool)
                )
                for t, v in (("p1", 1.0), ("p22", 2.0))
            ]
            with pytest.raises(ValueError, match="not an image"):
                await batcher.predict_prepared(broken, ["bad"], pool)
            await queued(batcher, 2)
            model.gate.set()
            await first
            assert [(await t).tolist() for t in ok] == [[[2, 1]], [[3, 2]]]
        assert model.calls == [["first"], ["p1", "p22"]]
        await batcher.close()

    run(body)


def test_a_prepared_request_counts_as_admitted_until_its_thread_queues_it() -> None:
    async def body() -> None:
        model = GatedModel()
        batcher = AdaptiveBatcher(model, max_queue_items=4)
        decoded = threading.Event()

        def prepare() -> np.ndarray:
            assert decoded.wait(10)
            return item("")[0]

        with ThreadPoolExecutor(1) as pool:
            running = asyncio.create_task(batcher.predict(*item("r")))
            await model.wait_entered()

            async def request() -> np.ndarray:
                with batcher.admitted():
                    return await batcher.predict_prepared(prepare, ["d"], pool)

            task = asyncio.create_task(request())
            for _ in range(100):
                await asyncio.sleep(0)
            assert (batcher.queued_items, batcher.admitted_requests) == (0, 1)
            decoded.set()
            await queued(batcher, 1)
            assert (batcher.queued_items, batcher.admitted_requests) == (1, 0)
            model.gate.set()
            await asyncio.gather(running, task)
        assert (batcher.queued_items, batcher.admitted_requests) == (0, 0)
        await batcher.close()

    run(body)


def test_a_request_cancelled_while_decoding_never_reaches_the_model() -> None:
    async def body() -> None:
        model = GatedModel()
        batcher = AdaptiveBatcher(model)
        decoded = threading.Event()

        def prepare() -> np.ndarray:
            assert decoded.wait(10)
            return item("")[0]

        with ThreadPoolExecutor(1) as pool:
            first = asyncio.create_task(batcher.predict(*item("first")))
            await model.wait_entered()
            gone = asyncio.create_task(batcher.predict_prepared(prepare, ["gone"], pool))
            await asyncio.sleep(0)
            gone.cancel()
            decoded.set()  # decoded after its client left: queued, then dropped unrun
            await queued(batcher, 1)
            kept = asyncio.create_task(batcher.predict(*item("kept")))
            model.gate.set()
            await first
            assert (await kept).tolist() == [[4, 0]]
        assert gone.cancelled()
        assert model.calls == [["first"], ["kept"]]
        await batcher.close()
        with ThreadPoolExecutor(1) as pool, pytest.raises(ServiceUnavailable):
            await batcher.predict_prepared(prepare, ["after close"], pool)

    run(body)


def test_a_request_whose_decoding_never_starts_is_answered_503() -> None:
    async def body() -> None:
        batcher = AdaptiveBatcher(GatedModel(gated=False))
        busy = threading.Event()
        pool = ThreadPoolExecutor(1)
        pool.submit(busy.wait, 10)  # the only decoding thread is taken
        waiting = asyncio.create_task(batcher.predict_prepared(pixels, ["x"], pool))
        await asyncio.sleep(0)
        pool.shutdown(wait=False, cancel_futures=True)  # as the service does when it stops
        busy.set()
        with pytest.raises(ServiceUnavailable):
            await asyncio.wait_for(waiting, 10)
        with pytest.raises(ServiceUnavailable):
            await batcher.predict_prepared(pixels, ["later"], pool)
        await batcher.close()

    run(body)
