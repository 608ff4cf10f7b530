"""The Ollama TEMPLATE derived from a chat template renders the same text as the Jinja template."""

import pytest
from transformers import AutoTokenizer

from privtune.data.render import named_template
from privtune.errors import PrivtuneError
from privtune.export.modelfile import derive_template, modelfile_text
from tests.export.ollama import fill, parse_modelfile

CONVERSATIONS = [("Be brief.", "What is 2+2?", "4"), (None, "Hello there", "Hi! How can I help?")]


def _jinja(tokenizer, system, prompt, response=None):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    if response is None:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": response}], tokenize=False)


def _until_response(template: str) -> str:
    """The prompt part: what the model sees before it answers (add_generation_prompt)."""
    return template.split("{{ .Response }}")[0]


@pytest.mark.parametrize("name", ["chatml", "alpaca"])
def test_template_renders_like_jinja(tiny_model, name):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = named_template(name)
    derived = derive_template(tokenizer)
    assert derived.system is None and "{{ if .System }}" in derived.template
    for system, prompt, response in CONVERSATIONS:
        assert fill(_until_response(derived.template), system, prompt) == _jinja(tokenizer, system, prompt)
        assert fill(derived.template, system, prompt, response) == _jinja(tokenizer, system, prompt, response)
    text = modelfile_text("m-f16.gguf", derived, ["<|im_end|>", 'a"b'])
    parsed = parse_modelfile(text)
    assert parsed["TEMPLATE"] == derived.template and parsed["from"] == "./m-f16.gguf"
    assert parsed["stop"] == ["<|im_end|>", 'a\\"b'] and "SYSTEM" not in parsed


def test_default_system_prompt_becomes_system_line(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = ("{% if messages[0]['role'] != 'system' %}<s>system: Be kind.\n{% endif %}"
                               "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<s>assistant: {% endif %}")
    derived = derive_template(tokenizer)
    assert derived.system == "Be kind."
    assert fill(_until_response(derived.template), "Be kind.", "hi") == _jinja(tokenizer, None, "hi")
    assert fill(derived.template, "Other.", "hi", "yo") == _jinja(tokenizer, "Other.", "hi", "yo")


def test_no_chat_template_is_a_clear_error(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = None
    with pytest.raises(PrivtuneError, match="no chat template"):
        derive_template(tokenizer)
