"""Shared-prefix training: the same loss and gradients as the full batch, with the prefix run once."""

import functools

import pytest
import torch

from privtune.train.shared_prefix import MIN_PREFIX, backbone_of, shared_prefix_length
from tests.conftest import method_trainer, sft_trainer, step
from tests.train.test_preference import pairs


@pytest.fixture(scope="module")
def trainer(tickets_dataset, tiny_model, tmp_path_factory):
    return sft_trainer(tickets_dataset, tiny_model, tmp_path_factory.mktemp("ckpt"))


def passes(trainer, monkeypatch):
    """The lengths of the sequences the backbone runs, recorded below the shared-prefix wrapper."""
    backbone = backbone_of(trainer.model)
    seen = []
    original = type(backbone).forward

    @functools.wraps(original)  # the wrapper reads the forward's signature
    def recorded(self, *a, **k):
        seen.append(tuple(k.get("input_ids", a[0] if a else None).shape))
        return original(self, *a, **k)

    monkeypatch.setattr(type(backbone), "forward", recorded)
    return seen


def loss_and_grads(trainer, batch, shared: bool):
    """The SFT trainer's loss and gradients, with or without the shared prefix."""
    from privtune.train.sft_trainer import trained_positions_only

    if shared:
        return step(trainer, batch, trainer.compute_loss)
    with trained_positions_only():
        return step(trainer, batch, super(type(trainer), trainer).compute_loss)


def assert_same_as_plain(shared, plain):
    """Loss and gradients of privtune's pass equal those of TRL's plain one."""
    (shared_loss, shared_grads), (plain_loss, plain_grads) = shared, plain
    assert torch.allclose(shared_loss, plain_loss, atol=1e-5)
    assert shared_grads.keys() == plain_grads.keys() and shared_grads
    for name, grad in plain_grads.items():
        assert torch.allclose(shared_grads[name], grad, atol=1e-4), name


def test_the_prefix_runs_once_and_loss_and_gradients_are_the_full_batchs(trainer, monkeypatch):
    batch = next(iter(trainer.get_train_dataloader()))
    rows, length = batch["input_ids"].shape
    prefix = shared_prefix_length(batch["input_ids"], batch["attention_mask"])
    assert MIN_PREFIX <= prefix < length  # the tickets share their template and instruction
    seen = passes(trainer, monkeypatch)
    full_loss, full_grads = loss_and_grads(trainer, batch, shared=False)
    assert seen == [(rows, length)]
    seen.clear()
    shared_loss, shared_grads = loss_and_grads(trainer, batch, shared=True)
    assert seen == [(1, prefix), (rows, length - prefix)]
    assert torch.allclose(full_loss, shared_loss, rtol=1e-5, atol=1e-6), (full_loss, shared_loss)
    assert full_grads.keys() == shared_grads.keys() and full_grads
    for name, grad in full_grads.items():
        assert torch.allclose(grad, shared_grads[name], rtol=1e-4, atol=1e-6), name
    assert "forward" not in vars(backbone_of(trainer.model))  # the wrapper is gone after the step


def test_the_evaluation_loss_takes_the_shared_prefix_too(trainer, monkeypatch):
    batch = next(iter(trainer.get_eval_dataloader()))
    seen = passes(trainer, monkeypatch)
    trainer.model.eval()
    try:
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, dict(batch))
            expected = super(type(trainer), trainer).compute_loss(trainer.model, dict(batch))
    finally:
        trainer.model.train()
    assert len(seen) == 3 and seen[0][0] == 1  # prefix, rest, then the plain pass
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-6)


def test_prefix_length_counts_only_shared_real_tokens():
    ids = torch.tensor([[5, 6, 7, 8, 1], [5, 6, 7, 9, 0], [5, 6, 7, 8, 2]])
    mask = torch.ones_like(ids)
    assert shared_prefix_length(ids, mask) == 3
    mask[1, 2] = 0  # a padded position is never shared
    assert shared_prefix_length(ids, mask) == 2
    same = torch.tensor([[4, 4, 4], [4, 4, 4]])
    assert shared_prefix_length(same, torch.ones_like(same)) == 2  # each row keeps a token to run
    assert shared_prefix_length(ids[:1], mask[:1]) == 0  # one row: nothing to share


def test_dropout_packing_and_checkpointing_take_the_plain_pass(tickets_dataset, tiny_model, tmp_path, monkeypatch):
    with_dropout = sft_trainer(tickets_dataset, tiny_model, tmp_path / "a", **{"lora.dropout": 0.1})
    seen = passes(with_dropout, monkeypatch)
    batch = next(iter(with_dropout.get_train_dataloader()))
    with_dropout.compute_loss(with_dropout.model, dict(batch))
    assert seen == [tuple(batch["input_ids"].shape)]  # one dropout mask would be shared across rows

    packed = sft_trainer(tickets_dataset, tiny_model, tmp_path / "b", packing="bfd")
    monkeypatch.undo()
    seen = passes(packed, monkeypatch)
    batch = next(iter(packed.get_train_dataloader()))
    packed.compute_loss(packed.model, dict(batch))
    assert seen == [tuple(batch["input_ids"].shape)]  # position ids given: rows are packed examples

    checkpointed = sft_trainer(tickets_dataset, tiny_model, tmp_path / "c", gradient_checkpointing=True)
    monkeypatch.undo()
    seen = passes(checkpointed, monkeypatch)
    batch = next(iter(checkpointed.get_train_dataloader()))
    checkpointed.compute_loss(checkpointed.model, dict(batch))
    assert seen == [tuple(batch["input_ids"].shape)]


def test_a_cache_layer_it_cannot_repeat_takes_the_plain_pass_alone(trainer, monkeypatch):
    """A model whose cache has another kind of layer (here: indexed attention) runs one plain pass, and no
    prefix pass before it: the cache's layers are known before anything runs."""
    seen = passes(trainer, monkeypatch)
    config = backbone_of(trainer.model).config
    monkeypatch.setattr(config, "layer_types", ["indexed_attention"] * config.num_hidden_layers, raising=False)
    batch = next(iter(trainer.get_train_dataloader()))
    assert shared_prefix_length(batch["input_ids"], batch["attention_mask"]) >= MIN_PREFIX
    trainer.compute_loss(trainer.model, dict(batch))
    assert seen == [tuple(batch["input_ids"].shape)]


@pytest.fixture(scope="module")
def instructed_pairs(tiny_model, tmp_path_factory):
    """Preference pairs whose prompts open with the same instruction, as templated data does."""
    import json

    from privtune.artifacts import Workspace
    from privtune.data import prep

    folder = tmp_path_factory.mktemp("instructed")
    records = folder / "pairs.jsonl"
    records.write_text("".join(json.dumps({**r, "prompt": "Classify the support ticket. Answer with JSON: category "
                                                          "and priority.\n\n" + r["prompt"]}) + "\n" for r in pairs(24)))
    config = prep.PrepConfig(max_length=96, validation_fraction=0.25, test_fraction=0)
    return prep.run([records], str(tiny_model), config, Workspace(folder / "runs"))[0]


def test_dpo_runs_the_prefix_once_for_the_policy_and_the_reference(instructed_pairs, tiny_model, tmp_path, monkeypatch):
    """A DPO batch (chosen rows, then rejected) shares the template and the prompts' opening: the policy and
    the reference (adapter off) each run it once and score only the answers' tokens, and loss and gradients
    are those of TRL's plain passes."""
    paired = instructed_pairs
    trainer = method_trainer("dpo", paired, tiny_model, tmp_path, batch_size=4)
    trainer.model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    length = shared_prefix_length(batch["input_ids"], batch["attention_mask"])
    assert length >= MIN_PREFIX and batch["input_ids"].shape[0] == 8

    import trl.trainer.utils as trl_utils

    seen, scored = passes(trainer, monkeypatch), []
    project = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply",
                        lambda hidden, *rest: scored.append(hidden.shape[0]) or project(hidden, *rest))
    shared = step(trainer, batch, trainer.compute_loss)
    rows, width = batch["input_ids"].shape
    answers = int(batch["completion_mask"][:, 1:].sum())
    assert seen == [(1, length), (rows, width - length)] * 2  # the policy's passes, then the reference's
    assert scored == [answers] * 2  # the head scores the answers' tokens only
    plain = step(trainer, batch, super(type(trainer), trainer).compute_loss)
    assert seen[4:] == [(rows, width)] * 2 and scored[2:] == [rows * (width - 1)] * 2
    assert_same_as_plain(shared, plain)


def test_a_reward_model_runs_the_prefix_once_with_the_same_loss(instructed_pairs, tiny_model, tmp_path, monkeypatch):
    """The reward trainer (a score head, which passes the token ids by position; chosen and rejected rows)
    takes the same shared prefix."""
    trainer = method_trainer("reward", instructed_pairs, tiny_model, tmp_path, batch_size=4)
    trainer.model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    length = shared_prefix_length(batch["input_ids"], batch["attention_mask"])
    assert length >= MIN_PREFIX

    seen = passes(trainer, monkeypatch)
    shared = step(trainer, batch, trainer.compute_loss)
    rows, width = batch["input_ids"].shape
    assert seen == [(1, length), (rows, width - length)]
    plain = step(trainer, batch, super(type(trainer), trainer).compute_loss)
    assert seen[2:] == [(rows, width)]
    assert_same_as_plain(shared, plain)
