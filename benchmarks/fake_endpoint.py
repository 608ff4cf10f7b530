"""A light OpenAI-compatible endpoint for throughput benchmarks: asyncio streams, fixed latency.

Run in its own process: `python fake_endpoint.py PORT LATENCY_S`. Every POST answers, after the
latency, one chat completion (a numbered batch of tasks, the shape a teacher returns); HTTP/1.1
keep-alive, so a client's pool reuses its connections. It costs ~0.1 ms of CPU a request, so the
client is what is measured.
"""

from __future__ import annotations

import asyncio
import json
import sys

CONTENT = "\n".join(f"{n}. Instruction: Write a short note about topic {n}.\n{n}. Input: <noinput>\n"
                    f"{n}. Output: A short note about topic {n}, in two sentences." for n in range(9, 13))
BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": CONTENT}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 300, "completion_tokens": 120, "total_tokens": 420},
}).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: req-bench\r\n"
            b"content-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, latency: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(latency)
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int, latency: float) -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w, latency), "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
