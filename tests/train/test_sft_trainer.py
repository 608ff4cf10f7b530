"""The SFT trainer's loss: TRL's fused LM head, projecting only the learned positions on CPU too."""

import pytest
import torch

from tests.conftest import sft_trainer, step


@pytest.fixture(scope="module")
def trainer(tickets_dataset, tiny_model, tmp_path_factory):
    return sft_trainer(tickets_dataset, tiny_model, tmp_path_factory.mktemp("ckpt"))


def loss_and_grads(trainer, batch, compact: bool):
    """One forward and backward through SFTTrainer.compute_loss, with or without the compact projection."""
    import trl

    result = step(trainer, batch, trainer.compute_loss if compact else super(type(trainer), trainer).compute_loss)
    assert trl.trainer.utils._use_triton(torch.device("cpu")) is False  # restored after the call
    return result


def test_compact_projection_gives_the_same_loss_and_gradients(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    trained = (batch["labels"][:, 1:] != -100).sum().item()
    assert 0 < trained < batch["labels"][:, 1:].numel()  # the batch has prompt tokens to skip
    full_loss, full_grads = loss_and_grads(trainer, batch, compact=False)
    compact_loss, compact_grads = loss_and_grads(trainer, batch, compact=True)
    assert torch.allclose(full_loss, compact_loss, rtol=1e-5, atol=1e-6), (full_loss, compact_loss)
    assert full_grads.keys() == compact_grads.keys() and full_grads
    for name, grad in full_grads.items():
        assert torch.allclose(grad, compact_grads[name], rtol=1e-4, atol=1e-6), name


def test_compact_projection_scores_only_the_trained_rows(trainer, monkeypatch):
    import trl.trainer.utils as trl_utils

    seen = []
    original = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply",
                        lambda hidden, *rest: seen.append(hidden.shape[0]) or original(hidden, *rest))
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        trainer.compute_loss(trainer.model, dict(batch))
        super(type(trainer), trainer).compute_loss(trainer.model, dict(batch))
    labels = batch["labels"][:, 1:]
    assert seen == [(labels != -100).sum().item(), labels.numel()]
