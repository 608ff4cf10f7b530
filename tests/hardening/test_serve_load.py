"""`privtune serve` under 64 concurrent mixed requests: malformed, plain, streaming, cancelled mid-stream."""

import asyncio
import json

import httpx
import openai

from tests.serve.test_serve import KEY, TICKET, server  # noqa: F401  (the module's served tiny model)

MALFORMED = [
    b"{not json",
    b"",
    json.dumps({"model": "tuned"}).encode(),                                          # no messages
    json.dumps({"model": "tuned", "messages": "hello"}).encode(),                     # wrong type
    json.dumps({"model": "tuned", "messages": [{"role": "wizard", "content": "x"}]}).encode(),
    json.dumps({"model": "tuned", "messages": [{"role": "user"}]}).encode(),          # no content
    json.dumps({"model": "tuned", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}).encode(),
    json.dumps({"model": "tuned", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}).encode(),
    json.dumps({"model": "other", "messages": [{"role": "user", "content": "x"}]}).encode(),  # unknown model: 404
    json.dumps([1, 2, 3]).encode(),
    json.dumps({"model": "tuned", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10 ** 9}).encode(),
    json.dumps({"model": "tuned", "messages": []}).encode(),
]


async def _load(base: str) -> dict:
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=300)
    raw = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=300)
    messages = [{"role": "user", "content": TICKET}]

    async def plain():
        reply = await client.chat.completions.create(model="tuned", messages=messages, max_tokens=12)
        return "ok" if reply.choices[0].message.content is not None else "empty"

    async def completion():
        reply = await client.completions.create(model="tuned", prompt="Ticket:", max_tokens=8)
        return "ok" if reply.choices[0].text is not None else "empty"

    async def streamed():
        stream = await client.chat.completions.create(model="tuned", messages=messages, max_tokens=12, stream=True)
        finish = None
        async for chunk in stream:
            finish = chunk.choices[0].finish_reason or finish
        return "ok" if finish in ("stop", "length") else f"no finish: {finish}"

    async def cancelled():
        async with raw.stream("POST", "/v1/chat/completions", json={"model": "tuned", "messages": messages,
                                                                    "max_tokens": 64, "stream": True}) as response:
            async for _ in response.aiter_lines():
                break  # first event read, then the client goes away
        return "cancelled"

    async def malformed(body: bytes):
        response = await raw.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        message = response.json().get("error", {}).get("message") if response.content else None
        return f"{response.status_code}" if 400 <= response.status_code < 500 and message else \
            f"bad: {response.status_code} {response.text[:200]}"

    jobs = ([plain() for _ in range(16)] + [streamed() for _ in range(16)] + [completion() for _ in range(8)] +
            [cancelled() for _ in range(12)] + [malformed(body) for body in MALFORMED])
    results = await asyncio.gather(*jobs, return_exceptions=True)
    after = await client.chat.completions.create(model="tuned", messages=messages, max_tokens=4)
    health = (await raw.get("/health")).json()
    await raw.aclose()
    await client.close()
    return {"results": results, "after": after, "health": health, "count": len(jobs)}


def test_64_mixed_concurrent_requests_all_answered_and_the_server_stays_up(server):  # noqa: F811
    outcome = asyncio.run(_load(server))
    results = outcome["results"]
    assert outcome["count"] == 64
    failures = [r for r in results if isinstance(r, Exception) or str(r).startswith(("bad", "no finish", "empty"))]
    assert failures == []
    assert results.count("ok") == 40 and results.count("cancelled") == 12
    assert sorted(r for r in results if r not in ("ok", "cancelled")) == ["400"] * 11 + ["404"]
    assert outcome["after"].choices[0].message.role == "assistant" and outcome["health"] == {"status": "ok"}
