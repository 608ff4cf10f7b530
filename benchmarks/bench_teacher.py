"""Generate rows: teacher throughput, requests/s against the k/L limit, per client, side by side.

A fake OpenAI-compatible endpoint (fake_endpoint.py, its own process) answers every request after
L = 1 s with ample capacity, so at concurrency k the limit is k/L requests/s and what falls short
is the client's CPU per request (client and server share the 2 cores). Each client runs k workers
doing ROUNDS requests each, as generate keeps k in flight.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from common import Row

LATENCY = 1.0
ROUNDS = 4
CONCURRENCY = (1, 32, 128, 256)
TARGETS = {128: 0.9, 256: 0.8}
MESSAGES = [{"role": "user", "content": "You are asked to come up with 10 diverse task instructions. " * 30}]


def make_client(kind: str, url: str, k: int):
    """(create, close) for one of the clients compared."""
    import httpx2
    from openai import AsyncOpenAI, DefaultAioHttpClient, DefaultAsyncHttpxClient

    from privtune.lean_client import LeanChatClient

    limits = httpx2.Limits(max_connections=k, max_keepalive_connections=k)
    if kind == "lean":
        client = LeanChatClient(url, "bench", timeout=60, max_retries=2, concurrency=k)
        return client.create, client.close
    http = {"openai": DefaultAsyncHttpxClient, "openai-aiohttp": DefaultAioHttpClient}[kind](limits=limits)
    client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=2, http_client=http)
    return client.chat.completions.create, client.close


async def measure(kind: str, url: str, k: int) -> tuple[float, float]:
    """(achieved / limit, client CPU ms per request)."""
    create, close = make_client(kind, url, k)
    await create(model="bench", messages=MESSAGES, max_tokens=512)  # warm-up: first-use costs are not throughput

    async def worker():
        for _ in range(ROUNDS):
            response = await create(model="bench", messages=MESSAGES, max_tokens=512, temperature=1.0)
            assert response.choices[0].message.content

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(k)))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    await close()
    return (k * ROUNDS / wall) / (k / LATENCY), cpu / (k * ROUNDS) * 1000


def rows() -> list[Row]:
    port = 18000 + int(time.time()) % 1000
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("fake_endpoint.py")), str(port),
                               str(LATENCY)], stdout=subprocess.PIPE)
    try:
        server.stdout.readline()
        url = f"http://127.0.0.1:{port}/v1"
        results = {}
        for kind in ("lean", "openai", "openai-aiohttp"):
            for k in CONCURRENCY:
                results[kind, k] = asyncio.run(measure(kind, url, k))
        sequential, _ = asyncio.run(measure("openai", url, 1))  # Alpaca's way: one request in flight
    finally:
        server.kill()
    out = []
    for k in CONCURRENCY:
        lean, cpu = results["lean", k]
        stock, stock_cpu = results["openai", k]
        aio, aio_cpu = results["openai-aiohttp", k]
        target = TARGETS.get(k)
        out.append(Row(f"teacher throughput k={k}, achieved/limit (L=1 s)",
                       f"{lean:.2f} lean client ({cpu:.2f} ms CPU/req)",
                       f"openai default {stock:.2f} ({stock_cpu:.2f} ms); openai aiohttp {aio:.2f} ({aio_cpu:.2f} ms)",
                       lean / stock, f">= {target}" if target else "-", lean >= target if target else None))
    best = results["lean", CONCURRENCY[-1]][0] * CONCURRENCY[-1] / LATENCY
    out.append(Row("teacher requests/s vs sequential client", f"{best:.0f} req/s (lean, k={CONCURRENCY[-1]})",
                   f"{sequential / LATENCY:.2f} req/s (one in flight, Alpaca's way)", best / (sequential / LATENCY),
                   "-", None, "fake endpoint in its own process, fixed 1 s latency; client and server share the cores"))
    return out
