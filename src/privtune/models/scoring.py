"""A prompt and an answer as the model sees them, and a reward model's score of it: shared by eval (ranking
held-out pairs) and generate --preferences (a reward model choosing between a model's own answers)."""

from __future__ import annotations

from privtune.models.inference import LoadedModel
from privtune.ui import track


def answer_row(loaded: LoadedModel, template: str, prompt: list[dict], answer: list[dict]) -> dict:
    """prompt + answer as token ids, the answer's tokens marked (the template renders the prompt as a prefix of
    prompt + answer: prep checks that for preference data)."""
    plain = lambda messages: [{"role": m["role"], "content": m["content"]} for m in messages]
    render = lambda messages, **kw: loaded.tokenizer.apply_chat_template(plain(messages), chat_template=template,
                                                                        tokenize=False, **kw)
    head = render(prompt, add_generation_prompt=True)
    encode = lambda text: loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt_ids, full_ids = encode(head), encode(render(prompt + answer))
    start = len(prompt_ids) if full_ids[:len(prompt_ids)] == prompt_ids else len(encode(head.rstrip()))
    return {"input_ids": full_ids, "assistant_masks": [0] * start + [1] * (len(full_ids) - start)}


def reward_scores(loaded: LoadedModel, rows: list[dict]) -> list[float]:
    """A reward model's score of each whole row (one at a time: the head reads the sequence's last token)."""
    import torch

    with torch.no_grad():
        return [float(loaded.model(input_ids=torch.tensor([row["input_ids"]], device=loaded.model.device)).logits[0, 0])
                for row in track(rows, f"scores {loaded.name}")]
