"""Verify, don't trust: read each GGUF back and run it against the model it was made from.

Read-back (gguf.GGUFReader, no weights): the token count equals the model's vocabulary, the chat
template is the model's own, and the eos id is one of the model's stop tokens. Then transformers loads
the GGUF (dequantizing it) and both models see the same held-out prompts: the largest logit difference
at each prompt's last position, and whether greedy decoding gives the same continuation and stops at
the end-of-turn token. F16 should agree almost exactly; Q8_0 shows what the quantization costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from privtune.errors import PrivtuneError

FIXED_PROMPTS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three primary colors.",
    "What is 12 times 7?",
    "Explain in one sentence what a fine-tuned model is.",
    "Translate 'good morning' into Spanish.",
    "Give a short title for a story about a lost cat.",
    "Is a tomato a fruit or a vegetable? Answer briefly.",
]


@dataclass
class Run:
    """One model's answers to the prompts: last-position logits and greedy continuations (ids, stopped)."""

    logits: "object"
    continuations: list[tuple[list[int], bool]]


def read_back(path: Path, tokenizer, vocab_size: int, stops: list[int]) -> dict:
    """The GGUF's header (read as `privtune import` reads it) against the model: token count, chat
    template, eos id."""
    from privtune.models.gguf import read_header

    header = read_header(path)
    eos = header["eos_token_id"]
    return {"tokens": header["tokens"], "vocab_size": vocab_size, "tokens_match": header["tokens"] == vocab_size,
            "chat_template_match": header["chat_template"] == tokenizer.chat_template,
            "eos_token_id": eos, "eot_token_id": header["eot_token_id"], "eos_is_stop": eos in stops,
            "architecture": header["architecture"], "name": header["name"],
            "tensor_types": sorted(header["tensor_types"])}


def prompts_of(rows: list[dict]) -> list[list[dict]]:
    """Each dataset row's conversation up to its last assistant turn: what the model answers."""
    prompts = []
    for row in rows:
        messages = [{"role": m["role"], "content": m["content"]} for m in row.get("messages", [])]
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()
        if messages:
            prompts.append(messages)
    return prompts


def fixed_prompts(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": text}] for text in FIXED_PROMPTS[:n]]


def run_model(model, tokenizer, prompts: list[list[dict]], stops: list[int], max_new_tokens: int) -> Run:
    """Greedy, batched with left padding; the first step's scores are the last prompt position's logits."""
    import torch

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             eos_token_id=stops or None, pad_token_id=tokenizer.pad_token_id,
                             output_logits=True, return_dict_in_generate=True)
    continuations = []
    for ids in out.sequences[:, batch["input_ids"].shape[1]:].tolist():
        end = next((i for i, token in enumerate(ids) if token in stops), None)
        continuations.append((ids[:end], end is not None))
    return Run(out.logits[0].float(), continuations)


def compare(reference: Run, exported: Run) -> dict:
    """Largest |logit difference| and greedy agreement of the exported model against the reference."""
    pairs = list(zip(reference.continuations, exported.continuations))
    return {"prompts": len(pairs),
            "max_abs_logit_diff": round(float((reference.logits - exported.logits).abs().max()), 5),
            "greedy_agreement": sum(a == b for a, b in pairs) / max(len(pairs), 1),
            "greedy_matches": sum(a == b for a, b in pairs),
            "stopped_at_end_of_turn": sum(stopped for _, stopped in exported.continuations),
            "reference_stopped_at_end_of_turn": sum(stopped for _, stopped in reference.continuations)}


def load_exported(path: Path):
    """transformers' GGUF loader, dequantized to float32 (privtune.models.gguf.load_gguf)."""
    from privtune.models.gguf import load_gguf

    try:
        return load_gguf(path)
    except PrivtuneError as exc:
        raise PrivtuneError(f"the exported GGUF does not load back: {exc.message}", source=str(path),
                            hint="the file was written but could not be verified; it is kept in the staging "
                                 "folder for inspection") from None


def tokenizers_agree(reference, exported, prompts: list[list[dict]]) -> bool:
    """The tokenizer rebuilt from the GGUF's vocabulary splits the prompts as the model's own does."""
    texts = [reference.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    return all(reference(t, add_special_tokens=False)["input_ids"] == exported(t, add_special_tokens=False)["input_ids"]
               for t in texts)
