"""Serve row: completion tokens/s of `privtune serve` at concurrency 1 and 8 on the tiny model.

One model answers one request at a time (requests queue), so concurrency 8 measures the queue's
overhead rather than batching gains; the ratio is reported against concurrency 1 in the same run.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

from common import Row, tiny_model

REQUESTS = 24
MAX_TOKENS = 64


def _server(port: int):
    import uvicorn

    from privtune.artifacts import Workspace
    from privtune.models.inference import load_for_inference
    from privtune.serve.app import create_app

    loaded = load_for_inference(str(tiny_model()), Workspace(Path("bench-out/serve-runs")))
    server = uvicorn.Server(uvicorn.Config(create_app(loaded, "tiny"), host="127.0.0.1", port=port,
                                           log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server


async def _load(url: str, concurrency: int) -> tuple[int, float]:
    from openai import AsyncOpenAI

    semaphore = asyncio.Semaphore(concurrency)
    async with AsyncOpenAI(base_url=url, api_key="local") as client:
        async def one(i: int) -> int:
            async with semaphore:
                reply = await client.chat.completions.create(
                    model="tiny", max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": f"ticket {i}"}])
                return reply.usage.completion_tokens

        start = time.perf_counter()
        tokens = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
        return sum(tokens), time.perf_counter() - start


def rows() -> list[Row]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fake_teacher import _free_port

    port = _free_port()
    server = _server(port)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        one_tokens, one_s = asyncio.run(_load(url, 1))
        eight_tokens, eight_s = asyncio.run(_load(url, 8))
    finally:
        server.should_exit = True
    one, eight = one_tokens / one_s, eight_tokens / eight_s
    return [Row(f"serve completion tokens/s, tiny model, {REQUESTS} chat requests", f"{eight:,.0f} tok/s at concurrency 8",
                f"{one:,.0f} tok/s at concurrency 1", eight / one, "(measured)", None,
                f"max_tokens {MAX_TOKENS}, random-init model (answers run to the limit or stop early alike); "
                "one request generates at a time, so concurrency adds queueing, not batching")]
