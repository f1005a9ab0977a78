"""attnmt's Dropout gives nn.Dropout's results bit for bit, and draws them without bernoulli_ where it can."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnmt.config import ModelConfig
from attnmt.dropout import Dropout, same_draws
from attnmt.model import Seq2Seq


def _both(module_class: type[nn.Dropout], p: float, inputs: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    """Output, input gradient and the generator's state afterwards, from ``seed``."""
    torch.manual_seed(seed)
    leaf = inputs.clone().requires_grad_()
    output = module_class(p).train()(leaf)
    (output.float() * torch.linspace(-1, 1, output.numel()).view_as(output)).sum().backward()
    assert leaf.grad is not None
    return output.detach(), leaf.grad, torch.get_rng_state()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("shape", [(7, 1, 33), (5, 9, 16)])
def test_dropout_is_nn_dropout_bit_for_bit(dtype: torch.dtype, p: float, shape: tuple[int, ...]) -> None:
    inputs = torch.randn(shape).to(dtype)
    ours, theirs = _both(Dropout, p, inputs, 3), _both(nn.Dropout, p, inputs, 3)
    for mine, reference in zip(ours, theirs):
        assert torch.equal(mine, reference)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_no_and_full_dropout_are_nn_dropouts(p: float) -> None:
    inputs = torch.randn(4, 6)
    assert torch.equal(Dropout(p).train()(inputs), nn.Dropout(p).train()(inputs))


def test_evaluation_returns_the_inputs_unchanged() -> None:
    inputs = torch.randn(3, 5)
    assert torch.equal(Dropout(0.3).eval()(inputs), inputs)


def test_where_the_draws_agree_no_bernoulli_is_run() -> None:
    if not same_draws():
        pytest.skip("this torch draws bernoulli_ masks another way here (MKL on Intel): Dropout is nn.Dropout")
    with torch.profiler.profile() as profile:
        Dropout(0.3).train()(torch.randn(8, 16))
    names = {event.name for event in profile.events()}
    assert "aten::bernoulli_" not in names and "aten::uniform_" in names


def test_the_check_leaves_the_global_generator_alone() -> None:
    same_draws.cache_clear()
    torch.manual_seed(5)
    before = torch.get_rng_state()
    same_draws()
    assert torch.equal(torch.get_rng_state(), before)


def _update_gradients(config: ModelConfig, seed: int) -> list[torch.Tensor]:
    """Gradients of one training step of a small model (dropout 0.3) from ``seed``."""
    torch.manual_seed(0)
    model = Seq2Seq.from_config(config, 20, 20, 50).train()
    src = torch.randint(4, 20, (3, 6))
    tgt = torch.randint(4, 20, (3, 5))
    torch.manual_seed(seed)
    model(src, torch.tensor([6, 6, 6]), tgt).sum().backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize(("decoder", "input_feeding"), [("luong", False), ("luong", True), ("bahdanau", False)])
def test_a_training_step_is_the_same_as_with_nn_dropout(
    monkeypatch: pytest.MonkeyPatch, decoder: str, input_feeding: bool
) -> None:
    config = ModelConfig(
        rnn="gru", decoder=decoder, input_feeding=input_feeding, embedding_size=8, hidden_size=12, dropout=0.3
    )  # type: ignore[arg-type]
    ours = _update_gradients(config, 11)
    monkeypatch.setattr(Dropout, "forward", nn.Dropout.forward)
    theirs = _update_gradients(config, 11)
    assert len(ours) == len(theirs) and all(torch.equal(a, b) for a, b in zip(ours, theirs))
