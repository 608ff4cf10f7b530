"""Shared-prefix training: the same loss and gradients as the full batch, with the prefix run once."""

import pytest
import torch

from privtune.train.shared_prefix import MIN_PREFIX, backbone_of, shared_prefix_length
from tests.conftest import sft_trainer


@pytest.fixture(scope="module")
def trainer(tickets_dataset, tiny_model, tmp_path_factory):
    return sft_trainer(tickets_dataset, tiny_model, tmp_path_factory.mktemp("ckpt"))


def passes(trainer, monkeypatch):
    """The lengths of the sequences the backbone runs, recorded below the shared-prefix wrapper."""
    backbone = backbone_of(trainer.model)
    seen = []
    original = type(backbone).forward
    monkeypatch.setattr(type(backbone), "forward",
                        lambda self, *a, **k: seen.append(tuple(k["input_ids"].shape)) or original(self, *a, **k))
    return seen


def loss_and_grads(trainer, batch, shared: bool):
    """One forward and backward through the trainer's loss, with or without the shared prefix."""
    from privtune.train.sft_trainer import trained_positions_only

    model = trainer.model
    model.zero_grad()
    if shared:
        loss = trainer.compute_loss(model, dict(batch))
    else:
        with trained_positions_only():
            loss = super(type(trainer), trainer).compute_loss(model, dict(batch))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


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
