"""The in-process limit: the service's own classifier and preprocessing with no HTTP.

Decoding is included, as it is on the server side, so the gap to the servers is what HTTP,
queueing and request handling cost. Imports TensorFlow; run only while no server is
being measured (``python -m bench.inprocess`` runs it alone and prints JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench import inputs
from bench.inputs import Sample
from bench.load import percentile
from service import model_store
from service.preprocessing import preprocess_image


@dataclass(frozen=True)
class InProcessResult:
    """Single-request latency and batched throughput of decode + forward pass."""

    device: str
    single_repetitions: int
    single_rps: float
    single_p50_ms: float
    single_p95_ms: float
    single_p99_ms: float
    batch_size: int
    batch_calls: int
    batch_items_per_s: float
    batch_p50_ms: float
    batch_p95_ms: float
    batch_p99_ms: float
    decode_workers: int


def measure(
    store: Path,
    name: str,
    samples: list[Sample],
    *,
    repetitions: int = 200,
    duration_s: float = 10.0,
    batch_size: int = 32,
    warmup_s: float = 2.0,
) -> InProcessResult:
    """Load the latest version of ``name`` on the CPU and time (i) one request at a time,
    ``repetitions`` times, and (ii) decode + predict of ``batch_size`` pairs for
    ``duration_s`` (after ``warmup_s`` of the same)."""
    from service.serving.inference.classifier import TFClassifier, configure_tensorflow

    device = configure_tensorflow("cpu")
    classifier = TFClassifier(model_store.resolve(store, name), device)
    classifier.warm_up((1, batch_size))
    size = classifier.image_size

    def one(sample: Sample) -> None:
        image = preprocess_image(sample.image, size)
        classifier.predict(image[None], [sample.text])

    for sample in samples[:5]:
        one(sample)
    single: list[float] = []
    start = time.perf_counter()
    for i in range(repetitions):
        t0 = time.perf_counter()
        one(samples[i % len(samples)])
        single.append((time.perf_counter() - t0) * 1000.0)
    single_elapsed = time.perf_counter() - start

    workers = os.cpu_count() or 1
    batches: list[float] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def run_batch(first: int) -> None:
            chosen = [samples[(first + k) % len(samples)] for k in range(batch_size)]
            images = list(pool.map(lambda s: preprocess_image(s.image, size), chosen))
            classifier.predict(np.stack(images), [s.text for s in chosen])

        _repeat(run_batch, batch_size, warmup_s, [])
        start = time.perf_counter()
        _repeat(run_batch, batch_size, duration_s, batches)
        batch_elapsed = time.perf_counter() - start

    return InProcessResult(
        device=device,
        single_repetitions=repetitions,
        single_rps=repetitions / single_elapsed,
        single_p50_ms=_required(percentile(single, 50)),
        single_p95_ms=_required(percentile(single, 95)),
        single_p99_ms=_required(percentile(single, 99)),
        batch_size=batch_size,
        batch_calls=len(batches),
        batch_items_per_s=len(batches) * batch_size / batch_elapsed,
        batch_p50_ms=_required(percentile(batches, 50)),
        batch_p95_ms=_required(percentile(batches, 95)),
        batch_p99_ms=_required(percentile(batches, 99)),
        decode_workers=workers,
    )


def _repeat(
    run_batch: Callable[[int], None], batch_size: int, duration_s: float, latencies_ms: list[float]
) -> None:
    deadline = time.perf_counter() + duration_s
    first = 0
    # At least one call, so a very short duration still yields a figure.
    while not latencies_ms or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        run_batch(first)
        latencies_ms.append((time.perf_counter() - t0) * 1000.0)
        first += batch_size


def _required(value: float | None) -> float:
    assert value is not None
    return value


def run_isolated(
    store: Path,
    name: str,
    *,
    images: int,
    image_side: int,
    repetitions: int,
    duration_s: float,
    warmup_s: float,
    log_file: Path,
    timeout_s: float,
) -> InProcessResult:
    """:func:`measure` in a fresh interpreter, as the servers run: it starts from the same
    clean state, TensorFlow's console noise goes to ``log_file``, and the benchmark
    process itself never imports TensorFlow."""
    command = [
        sys.executable,
        "-m",
        "bench.inprocess",
        "--model-store",
        str(store),
        "--model-name",
        name,
        "--images",
        str(images),
        "--image-side",
        str(image_side),
        "--repetitions",
        str(repetitions),
        "--duration",
        str(duration_s),
        "--warmup",
        str(warmup_s),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    root = Path(__file__).resolve().parents[1]
    with log_file.open("wb") as log:
        done = subprocess.run(
            command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=log, timeout=timeout_s
        )
    if done.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"in-process measurement exited with {done.returncode}:\n{tail}")
    return InProcessResult(**json.loads(done.stdout.decode().strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    """Measure and print the result as one JSON line (used by :func:`run_isolated`)."""
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    parser.add_argument("--model-store", type=Path, required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--images", type=int, default=inputs.DEFAULT_COUNT)
    parser.add_argument("--image-side", type=int, default=inputs.DEFAULT_SIDE)
    parser.add_argument("--repetitions", type=int, default=200)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args(argv)
    result = measure(
        args.model_store,
        args.model_name,
        inputs.generate(args.images, args.image_side),
        repetitions=args.repetitions,
        duration_s=args.duration,
        warmup_s=args.warmup,
    )
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
