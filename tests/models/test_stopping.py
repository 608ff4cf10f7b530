"""Generation stops on the chat template's end-of-turn token, also when it is not the tokenizer's eos."""

from types import SimpleNamespace

import pytest
import torch

from privtune.eval import stage
from privtune.models.inference import load_for_inference
from privtune.models.stopping import end_of_turn_id, stop_token_ids
from privtune.contract import split_rows

FOREIGN_EOS = "<|endoftext|>"
"""The tiny model's tokenizer ends turns with <|im_end|>; this other special token plays a base model's eos."""


@pytest.fixture()
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def with_foreign_eos(loaded):
    """Make eos something else than the end of turn, as on Qwen2.5 or Llama-3 base tokenizers."""
    loaded.tokenizer.eos_token = FOREIGN_EOS
    loaded.model.generation_config.eos_token_id = loaded.tokenizer.convert_tokens_to_ids(FOREIGN_EOS)
    return loaded


def test_stop_ids_union_eos_generation_config_and_end_of_turn(tokenizer):
    im_end, other = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids(FOREIGN_EOS)
    assert end_of_turn_id(tokenizer) == im_end
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=im_end))
    assert stop_token_ids(model, tokenizer) == [im_end]  # once, though all three name it
    tokenizer.eos_token = FOREIGN_EOS
    model.generation_config.eos_token_id = [other, 7]
    assert stop_token_ids(model, tokenizer) == [other, 7, im_end]
    tokenizer.chat_template = None  # no template: eos ids only, no error
    assert stop_token_ids(model, tokenizer) == [other, 7]
    assert stop_token_ids(SimpleNamespace(), tokenizer) == [other]  # no generation config at all


def test_end_of_turn_found_whatever_the_template_calls_it(tokenizer):
    tokenizer.add_special_tokens({"additional_special_tokens": ["<end_of_turn>"]})
    tokenizer.chat_template = ("{% for m in messages %}<start_of_turn>{{ m.role }}\n{{ m.content }}<end_of_turn>\n"
                               "{% endfor %}")  # Gemma's shape
    assert end_of_turn_id(tokenizer) == tokenizer.convert_tokens_to_ids("<end_of_turn>")
    tokenizer.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n\n{% endfor %}"
    assert end_of_turn_id(tokenizer) is None  # plain text after the answer: nothing to stop on
    tokenizer.chat_template = "{{ raise_exception('system message required') }}"
    assert end_of_turn_id(tokenizer) is None


@pytest.fixture(scope="module")
def ticket_prompts(tickets_dataset):
    _, rows, _ = split_rows(tickets_dataset, 8)
    return [r["messages"][:-1] for r in rows]


LIMIT = 48


def test_eval_stops_at_end_of_turn_when_eos_differs(tuned_model, ticket_prompts):
    artifact, workspace = tuned_model
    config = stage.EvalConfig(max_new_tokens=LIMIT, batch_size=8)
    loaded = load_for_inference(artifact.id, workspace)
    reference = stage.generate_answers(loaded, ticket_prompts, config)
    assert all(stopped for _, stopped in reference)  # the tuned model ends its answers with <|im_end|>

    loaded = with_foreign_eos(loaded)
    tokenizer = loaded.tokenizer
    assert tokenizer.eos_token_id != tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stage.generate_answers(loaded, ticket_prompts, config) == reference
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(loaded.model, tokenizer)

    # stopping on the tokenizer's eos alone, as before: every answer runs to the limit
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in ticket_prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = loaded.model.generate(**batch, max_new_tokens=LIMIT, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    new = out[:, batch["input_ids"].shape[1]:]
    assert new.shape[1] == LIMIT and not (new == tokenizer.eos_token_id).any()
