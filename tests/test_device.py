"""Device and precision choice: bf16 only where the hardware computes it natively."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
import torch
from torch import nn

from attnmt.device import (
    autocast,
    call_shared,
    choose_precision,
    cpu_supports_bf16,
    pick_device,
    precision_name,
    read_shared,
    shared_copy,
    shared_parameters,
)
from attnmt.errors import AttnmtError


def test_the_log_names_precisions_as_configs_do() -> None:
    assert [precision_name(d) for d in (None, torch.bfloat16, torch.float16)] == ["fp32", "bf16", "fp16"]


def test_precision_settings() -> None:
    cpu = torch.device("cpu")
    assert choose_precision("fp32", cpu) is None
    assert choose_precision("auto", cpu) == (torch.bfloat16 if cpu_supports_bf16() else None)
    if cpu_supports_bf16():
        assert choose_precision("bf16", cpu) is torch.bfloat16
    else:  # oneDNN has no bf16 LSTM kernel without native support: a clear refusal, not a traceback mid-training
        with pytest.raises(AttnmtError, match="training.precision: bf16 needs a CPU with native bf16"):
            choose_precision("bf16", cpu)
    with pytest.raises(AttnmtError, match="fp16 needs a CUDA device"):
        choose_precision("fp16", cpu)


def test_cpu_unless_cuda_is_there() -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(AttnmtError, match="no CUDA device"):
            pick_device("cuda")


def _relative_error(gradient: torch.Tensor, exact: torch.Tensor) -> float:
    return float((gradient - exact).norm() / exact.norm())


def _recurrent_gradient(context: AbstractContextManager[object]) -> torch.Tensor:
    """The gradient of a GRU's recurrent weight after 256 steps, computed under ``context``."""
    torch.manual_seed(0)
    rnn, output = nn.GRU(16, 32, batch_first=True), nn.Linear(32, 32)
    inputs = torch.randn(16, 256, 16)
    with context:
        loss_terms = output(rnn(inputs)[0])
    loss_terms.float().square().mean().backward()
    assert rnn.weight_hh_l0.grad is not None
    return rnn.weight_hh_l0.grad


def test_bf16_training_sums_each_steps_gradient_in_fp32() -> None:
    """Autocast's weight cache would sum 256 steps' gradients of the recurrent weight in bf16."""
    exact = _recurrent_gradient(autocast(torch.device("cpu"), None))
    ours = _recurrent_gradient(autocast(torch.device("cpu"), torch.bfloat16))
    cached = _recurrent_gradient(torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=True))

    assert _relative_error(ours, exact) < 0.008  # bf16 products, fp32 sums (measured 0.0036)
    assert _relative_error(cached, exact) > 3 * _relative_error(ours, exact)  # measured 0.020: bf16 sums


def _gradient_of_many_reads(share: Callable[[torch.Tensor], Callable[[], torch.Tensor]] | None) -> torch.Tensor:
    """The gradient of a (16, 32) tensor that 256 "steps" multiply by: in fp32 (``share`` None), or in bf16,
    each step reading what ``share`` made of it."""
    torch.manual_seed(0)
    full = torch.randn(16, 32, requires_grad=True)
    queries = torch.randn(256, 8, 16)
    with autocast(torch.device("cpu"), None if share is None else torch.bfloat16):
        read = (lambda: full) if share is None else share(full)
        products = torch.stack([query @ read() for query in queries])
    products.float().square().sum().backward()
    assert full.grad is not None
    return full.grad


def test_steps_read_one_shared_bf16_copy_and_sum_its_gradients_in_fp32() -> None:
    """``shared_copy``/``read_shared``: no copy per step, and the 256 steps' gradients summed in fp32."""

    def shared(tensor: torch.Tensor) -> Callable[[], torch.Tensor]:
        tensor, reduced = shared_copy(tensor)
        assert reduced is not None and reduced.dtype == torch.bfloat16
        assert read_shared(tensor, reduced).untyped_storage().data_ptr() == reduced.untyped_storage().data_ptr()
        return lambda: read_shared(tensor, reduced)

    def one_bf16_tensor(tensor: torch.Tensor) -> Callable[[], torch.Tensor]:
        reduced = tensor.to(torch.bfloat16)  # an ordinary shared copy: autograd sums in bf16
        return lambda: reduced

    exact = _gradient_of_many_reads(None)

    ours, plain = _gradient_of_many_reads(shared), _gradient_of_many_reads(one_bf16_tensor)
    assert _relative_error(ours, exact) < 0.005  # measured 0.0016
    assert _relative_error(plain, exact) > 3 * _relative_error(ours, exact)  # measured 0.016
    assert shared_copy(torch.ones(2))[1] is None  # outside autocast: nothing to share


def _stepped_gradient(dtype: torch.dtype | None, shared: bool) -> torch.Tensor:
    """A GRU's recurrent-weight gradient over 64 steps of one call each (as input feeding runs it)."""
    torch.manual_seed(0)
    rnn, inputs = nn.GRU(16, 32, batch_first=True), torch.randn(16, 64, 16)
    with autocast(torch.device("cpu"), dtype):
        reduced = shared_parameters(rnn) if shared else None
        state, outputs = None, []
        for t in range(inputs.size(1)):
            output, state = call_shared(rnn, reduced, inputs[:, t : t + 1], state)
            outputs.append(output)
    torch.cat(outputs, dim=1).float().square().mean().backward()
    assert rnn.weight_hh_l0.grad is not None
    return rnn.weight_hh_l0.grad


def test_steps_call_a_module_on_one_shared_copy_of_its_weights() -> None:
    """``shared_parameters``/``call_shared``: one bf16 copy for all steps, the same gradient as a cast per step."""
    exact, per_step = _stepped_gradient(None, False), _stepped_gradient(torch.bfloat16, False)
    ours = _stepped_gradient(torch.bfloat16, True)
    assert _relative_error(ours, per_step) < 1e-5  # the same bf16 products, summed in fp32 in another order
    assert _relative_error(ours, exact) < 0.01
    assert shared_parameters(nn.GRU(2, 2)) is None  # outside autocast: nothing to share
    with autocast(torch.device("cpu"), torch.bfloat16):
        copies = shared_parameters(nn.GRU(2, 3))
    assert copies is not None and {name: c.dtype for name, c in copies.items()} == {
        name: torch.bfloat16 for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    }
