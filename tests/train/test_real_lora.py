"""A short LoRA run of the real SmolLM2 on the demo tickets: held-out loss falls, the merged model
answers exactly as the adapter does, and the tuned model stops at `<|im_end|>`."""

import json

import pytest

from privtune.models.inference import load_for_inference

pytestmark = pytest.mark.real_model


def _test_prompts(dataset, count=8):
    rows = [json.loads(line) for line in (dataset.path / "test.jsonl").read_text().splitlines()][:count]
    return [r["messages"][:-1] for r in rows], [r["messages"][-1]["content"] for r in rows]


def _greedy(model, tokenizer, prompts, max_new_tokens=32):
    import torch

    answers = []
    for messages in prompts:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        answers.append(out[0, ids["input_ids"].shape[1]:].tolist())
    return answers


def test_lora_lowers_held_out_loss(smol_tuned):
    metrics = smol_tuned.manifest["metrics"]
    print(f"validation loss {metrics['eval_loss_start']:.4f} -> {metrics['eval_loss_end']:.4f}")
    assert metrics["eval_loss_end"] < 0.6 * metrics["eval_loss_start"]


def test_merged_answers_equal_the_adapters_and_stop_at_end_of_turn(smol_tuned, smol_tickets, real_workspace):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smol_tuned.path / "model")
    base = AutoModelForCausalLM.from_pretrained(smol_tuned.manifest["base_model"], dtype=torch.float32)
    adapter = PeftModel.from_pretrained(base, str(smol_tuned.path / "model")).eval()
    merged = load_for_inference(smol_tuned.id, real_workspace)  # merged/ when the artifact has it
    assert (smol_tuned.path / "merged" / "model.safetensors").is_file()
    prompts, references = _test_prompts(smol_tickets)
    from_adapter = _greedy(adapter, tokenizer, prompts)
    from_merged = _greedy(merged.model, merged.tokenizer, prompts)
    assert from_merged == from_adapter
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert all(end_of_turn in ids for ids in from_merged)  # stopped at <|im_end|>, not at the limit
    answers = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in from_merged]
    assert all(json.loads(a).keys() == {"category", "priority"} for a in answers), answers
    print("exact match on 8 test tickets:", sum(a == r for a, r in zip(answers, references)))
