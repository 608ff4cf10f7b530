"""What a client, or the network, must not be able to do to `privtune serve` (issue #12, Trust).

A body too big is refused as it arrives; a prompt too long before the model sees it; a client that
hangs up frees the model; SIGTERM ends the server within seconds; template and unexpected errors are
JSON; an unauthenticated server beyond loopback, a bad or taken port are clean errors.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from privtune.models.inference import load_for_inference
from privtune.serve.app import create_app, exposure_warning, is_loopback
from tests.fake_teacher import _free_port

HI = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}


@pytest.fixture()
def loaded(tiny_model, workspace):
    return load_for_inference(str(tiny_model), workspace)


@contextlib.contextmanager
def running(app):
    """The app behind a real uvicorn on a free loopback port: byte-level client behaviour needs a socket."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def raw(port: int, head: str, body: bytes = b"") -> tuple[int, dict]:
    """Send a request's head and part of its body, then read the response (status, JSON)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        with sock.makefile("rb") as reply:
            status = int(reply.readline().split()[1])
            headers = dict(line.decode().lower().strip().split(": ", 1) for line in iter(reply.readline, b"\r\n"))
            return status, json.loads(reply.read(int(headers["content-length"])))


def test_a_body_over_the_limit_is_413_before_it_is_read(loaded):
    limit = 64 * 1024
    with running(create_app(loaded, "tiny", max_body_bytes=limit)) as port:
        # says 50 MB, sends 1 KB: answered at once, not after waiting for (and buffering) the rest
        status, reply = raw(port, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                                  "\r\nContent-Length: 50000000\r\n", b"{" + b" " * 1024)
        assert status == 413, reply
        assert str(limit) in reply["error"]["message"] and "--max-body-bytes" in reply["error"]["message"]

        # chunked, no Content-Length: counted as it arrives; refused once past the limit, end never sent
        chunks = b"".join(b"%x\r\n%s\r\n" % (4096, b" " * 4096) for _ in range(limit // 4096 + 1))
        status, reply = raw(port, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                                  "\r\nTransfer-Encoding: chunked\r\n", chunks)
        assert status == 413 and "--max-body-bytes" in reply["error"]["message"], reply

        assert httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=HI).status_code == 200  # still up


def test_a_prompt_over_the_token_limit_is_400_naming_it(loaded):
    client = TestClient(create_app(loaded, "tiny", max_prompt_tokens=50))
    long = {"messages": [{"role": "user", "content": "hello there " * 100}], "max_tokens": 4}
    for body in (long, {**long, "stream": True}, {"prompt": "hello there " * 100, "max_tokens": 4}):
        path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
        response = client.post(path, json=body)
        assert response.status_code == 400, response.text
        assert "at most 50" in response.json()["error"]["message"]
        assert "--max-prompt-tokens" in response.json()["error"]["message"]
    assert client.post("/v1/chat/completions", json=HI).status_code == 200
    # by default the limit is the model's context (1024 for the tiny model)
    default = TestClient(create_app(loaded, "tiny")).post("/v1/completions", json={"prompt": "hello " * 2000})
    assert default.status_code == 400 and "at most 1024" in default.json()["error"]["message"]


ALTERNATE = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
             "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
             "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
             "<|im_start|>assistant\n")


def test_a_chat_template_error_is_400_with_its_message(loaded, monkeypatch):
    monkeypatch.setattr(loaded.tokenizer, "chat_template", ALTERNATE)
    client = TestClient(create_app(loaded, "tiny"))
    twice = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "max_tokens": 4}
    response = client.post("/v1/chat/completions", json=twice)
    assert response.status_code == 400, response.text
    assert "roles must alternate" in response.json()["error"]["message"]
    assert client.post("/v1/chat/completions", json=HI).status_code == 200


def test_an_unexpected_error_is_a_json_500_without_the_traceback(loaded, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret detail /home/someone/model")

    monkeypatch.setattr(loaded.tokenizer, "apply_chat_template", broken)
    client = TestClient(create_app(loaded, "tiny"), raise_server_exceptions=False)
    response = client.post("/v1/chat/completions", json=HI)
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    message = response.json()["error"]["message"]
    assert "RuntimeError" in message and "secret" not in message and "Traceback" not in response.text


@pytest.mark.filterwarnings("ignore:Unfeasible length constraints")  # min_new_tokens > the short one's max
def test_a_client_that_hangs_up_frees_the_model(loaded):
    """A non-streaming request whose client is gone stops generating: the next one is not stuck behind it."""
    started = threading.Event()

    def slow(module, args):  # ~10 ms a token, and at least 900 of them: a long answer nobody will read
        started.set()
        time.sleep(0.01)

    loaded.model.register_forward_pre_hook(slow)
    loaded.model.generation_config.min_new_tokens = 900
    long = json.dumps({"prompt": "hello", "max_tokens": 1000}).encode()
    with running(create_app(loaded, "tiny")) as port:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(long), long))
            assert started.wait(10)
        start = time.monotonic()  # the client has gone; ~9 s of generation were left
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"prompt": "hi", "max_tokens": 5},
                           timeout=30)
        waited = time.monotonic() - start
    assert reply.status_code == 200 and waited < 3, f"waited {waited:.1f}s"


def test_sigterm_stops_serve_within_seconds(tiny_model, tmp_path):
    """After the drain time, in-flight and queued requests are cancelled, answered 503, and serve exits."""
    port = _free_port()
    env = {**os.environ, "PRIVTUNE_THREADS": "1"}
    env.pop("PRIVTUNE_SERVE_API_KEY", None)
    log = tmp_path / "serve.log"  # a file, not a pipe nobody reads while it runs
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "privtune", "serve", str(tiny_model), "--port", str(port),
                                    "--workspace", str(tmp_path / "runs")], env=env, stdout=out, stderr=out)
    clients = []
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        # 24 requests of 1000 tokens: over 20 s of work on the tiny model, each client waiting for its answer
        body = json.dumps({"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 1000}).encode()
        for _ in range(24):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            clients[-1].sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                                b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(1)
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        took = time.monotonic() - start
        assert took < 10, f"serve took {took:.1f}s to stop after SIGTERM"
        statuses = [sock.recv(12) for sock in clients]
        assert b"HTTP/1.1 503" in statuses and set(statuses) <= {b"HTTP/1.1 503", b"HTTP/1.1 200"}, statuses
        assert "Traceback" not in log.read_text()
    finally:
        for sock in clients:
            sock.close()
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_request_cancelled_before_it_reaches_the_model_is_a_json_503(loaded, monkeypatch):
    """uvicorn cancels in-flight tasks when the SIGTERM drain runs out; one still queued to tokenize (the
    executor busy with other requests) was a plain-text 500 and a traceback, not the shutdown's 503."""
    import asyncio

    from privtune.serve import app as serve_app

    tokenizing = threading.Event()
    original = serve_app.Generator.prepare

    def slow(self, *args):
        tokenizing.set()
        time.sleep(0.5)
        return original(self, *args)

    monkeypatch.setattr(serve_app.Generator, "prepare", slow)
    app, body, sent = create_app(loaded, "tiny"), json.dumps(HI).encode(), []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "root_path": "", "query_string": b"",
             "headers": [(b"host", b"x"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 8000)}

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    async def cancelled_while_tokenizing():
        task = asyncio.ensure_future(app(scope, receive, send))
        while not tokenizing.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        await task  # answered, not re-raised to uvicorn

    asyncio.run(cancelled_while_tokenizing())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 503
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["error"]["message"] == \
        "the server is shutting down"


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False),
                                            ("192.168.1.20", False), ("gpu-box.lan", False)])
def test_loopback_is_127_8_and_1_and_localhost(host, loopback):
    assert is_loopback(host) is loopback


def test_beyond_loopback_needs_a_key_or_trusted_network(cli, workspace, monkeypatch):
    monkeypatch.delenv("PRIVTUNE_SERVE_API_KEY", raising=False)
    # refused before the model loads (there is none at that path)
    code, out = cli("serve", "./no/such/model", "--host", "0.0.0.0", "--workspace", workspace.root)
    flat = out.replace("\n", " ")
    assert code == 2 and "Traceback" not in out, out
    assert "--host" in flat and "PRIVTUNE_SERVE_API_KEY" in flat and "--trusted-network" in flat
    assert exposure_warning("0.0.0.0", "a-key", False) is None
    assert "WITHOUT an API key" in exposure_warning("0.0.0.0", None, True)
    assert exposure_warning("127.0.0.1", None, False) is None


def test_a_taken_port_is_a_clean_error(cli, workspace):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, out = cli("serve", "./no/such/model", "--port", port, "--workspace", workspace.root)  # before loading
    assert code == 2 and "Traceback" not in out, out
    assert "--port" in out and "in use" in out and str(port) in out
