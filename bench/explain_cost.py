"""What ``explain=modality`` costs: the throughput of plain and explained ``/v1/predict``
requests at one concurrency, against a running server.

    python -m bench.explain_cost --url http://127.0.0.1:8000 --image cat.jpg --text "a cat"

Each level runs a closed loop of ``--concurrency`` clients for ``--seconds``; the answer is
both rates and their ratio (explain does three items' model work per request).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import httpx


async def rate(
    url: str, image: bytes, text: str, params: dict[str, str], args: argparse.Namespace
) -> float:
    """Requests per second of ``concurrency`` closed-loop clients for ``seconds``."""
    done = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        deadline = time.monotonic() + args.seconds

        async def loop() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                response = await client.post(
                    "/v1/predict", params=params, files={"image": ("x", image)}, data={"text": text}
                )
                response.raise_for_status()
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(args.concurrency)))
        return done / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    image = args.image.read_bytes()
    asyncio.run(rate(args.url, image, args.text, {}, argparse.Namespace(concurrency=2, seconds=2)))
    plain = asyncio.run(rate(args.url, image, args.text, {}, args))
    explained = asyncio.run(rate(args.url, image, args.text, {"explain": "modality"}, args))
    print(
        f"concurrency {args.concurrency}, {args.seconds:g} s each: plain {plain:.1f} req/s, "
        f"explain=modality {explained:.1f} req/s, ratio {plain / explained:.2f}x"
    )


if __name__ == "__main__":
    main()
