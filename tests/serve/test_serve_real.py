"""privtune serve of the real tuned SmolLM2, through the openai client: its ChatML template, its stop."""

import json

import threading
import time

import openai
import pytest
import uvicorn

from privtune.models.inference import load_for_inference
from privtune.serve.app import create_app
from tests.fake_teacher import _free_port

pytestmark = pytest.mark.real_model

TICKET = ("Classify the support ticket. Answer with JSON: category and priority.\n\n"
          "Hello team, the app crashes when I open the reports screen. Our whole team is down.")


def test_serve_answers_with_the_real_template(smol_tuned, real_workspace):
    loaded = load_for_inference(smol_tuned.id, real_workspace)
    rendered = loaded.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                    add_generation_prompt=True)
    assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(loaded, "tickets"), host="127.0.0.1", port=port,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="local")
        reply = client.chat.completions.create(model="tickets", max_tokens=40,
                                               messages=[{"role": "user", "content": TICKET}])
    finally:
        server.should_exit = True
        thread.join(timeout=5)
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and reply.usage.completion_tokens < 40
    assert json.loads(choice.message.content).keys() == {"category", "priority"}
    # the same text as rendering the template by hand and generating greedily
    import torch

    text = loaded.tokenizer.apply_chat_template([{"role": "user", "content": TICKET}], tokenize=False,
                                                add_generation_prompt=True)
    ids = loaded.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = loaded.model.generate(**ids, max_new_tokens=40, do_sample=False)
    assert loaded.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip() == \
        choice.message.content
