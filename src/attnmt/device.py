"""Where and in what precision to compute: CUDA when present, bf16 only where it is fast.

attnmt runs on a CPU by default and on CUDA when one is there. Training may use
bf16 autocast, but only on hardware that computes it natively: on a CPU without
AVX512-BF16 or AMX, torch emulates bf16 matrix products hundreds of times slower
than fp32 (measured: 0.34 vs 150 GFLOP/s for a 2048x2048 matmul on an AVX2-only
EPYC), so ``precision: auto`` picks fp32 there. Where it is native the same
product ran at 922 vs 205 GFLOP/s (an EPYC with AVX512-BF16).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnmt.errors import AttnmtError


def pick_device(setting: str = "auto", local_rank: int = 0) -> torch.device:
    """CUDA when asked for or (with "auto") when present, else the CPU; under torchrun the GPU of LOCAL_RANK."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise AttnmtError("device cuda was asked for, but torch sees no CUDA device")
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def cpu_supports_bf16() -> bool:
    """True if this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training (None = plain fp32).

    ``auto``: on CUDA bf16 where the GPU supports it, else fp16 (trained with a
    gradient scaler); on a CPU bf16 only with native support. ``fp16`` is for CUDA
    only: CPUs have no fast fp16 arithmetic.
    """
    if setting == "fp32":
        return None
    if setting == "bf16":
        if device.type == "cpu" and not cpu_supports_bf16():
            raise AttnmtError(
                "training.precision: bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX); this one has neither "
                "(oneDNN cannot even build bf16 LSTM kernels here): use auto or fp32"
            )
        return torch.bfloat16
    if setting == "fp16":
        if device.type != "cuda":
            raise AttnmtError("training.precision: fp16 needs a CUDA device; on a CPU use auto, fp32 or bf16")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    """How the training log names an autocast dtype: fp32 (no autocast), bf16 or fp16."""
    names: dict[torch.dtype | None, str] = {torch.bfloat16: "bf16", torch.float16: "fp16"}
    return names.get(dtype, "fp32")


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[object]:
    """Mixed precision for training and validation: matrix products in ``dtype``, plain fp32 for None.

    Autocast's weight cache is off. With it, a weight the recurrence uses at every
    step (an RNN's, W_c) is cast once per batch, and autograd sums the gradients of
    all steps in bf16 before casting them back. Without it each step's cast has its
    own backward, so the sum runs in fp32. On the matched model after 600 updates the
    validation perplexity was 16.19 with the cache, 15.30 without, and 15.78 in fp32.
    The cost would be one bf16 copy of those weights per step, kept for the backward
    pass: the decoder instead casts the weights its steps use once per batch
    (``shared_parameters``), with each step's gradient still summed in fp32.
    """
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


class _SharedRead(torch.autograd.Function):
    """One read of a reduced-precision copy made once per batch; its gradient goes back in full precision."""

    @staticmethod
    def forward(ctx: Any, full: torch.Tensor, reduced: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.dtype = full.dtype
        return reduced.view_as(reduced)  # no copy: every step's product keeps the same storage for backward

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad.to(ctx.dtype), None


def shared_copy(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(full, reduced)`` for a tensor every decoder step reads: fp32, and one detached copy in autocast's dtype.

    Outside autocast ``reduced`` is None. Steps read it through ``read_shared``:
    autocast would instead cast the tensor anew at every step and keep each copy
    for the backward pass (35 copies of the encoder outputs on a 35-word batch);
    a copy shared as an ordinary tensor would sum the steps' gradients in bf16.
    """
    device_type = tensor.device.type
    if not tensor.is_floating_point() or not torch.is_autocast_enabled(device_type):
        return tensor, None
    return tensor.float(), tensor.detach().to(torch.get_autocast_dtype(device_type))


def read_shared(full: torch.Tensor, reduced: torch.Tensor | None) -> torch.Tensor:
    """What a step's products read: the shared reduced copy (gradient summed into ``full`` in fp32), or ``full``."""
    return full if reduced is None else _SharedRead.apply(full, reduced)


def shared_parameters(module: nn.Module | None) -> dict[str, torch.Tensor] | None:
    """Under autocast on a CPU: one detached copy of each of ``module``'s parameters in autocast's dtype.

    For a module that every decoder step calls: made once per batch and read through
    ``call_shared`` at each call, it replaces the copy autocast would make and keep
    for backward at every step (the matched model's largest batch: 35 copies of the
    decoder GRU's and W_c's weights, 166 MB). Not for one call over a whole sequence:
    the RNN's steps inside it would share one read and sum their gradients in bf16.
    None outside autocast, for a module without parameters, and on CUDA, where cuDNN
    takes an RNN's weights as one flat buffer.
    """
    if module is None or not torch.is_autocast_enabled("cpu"):
        return None
    parameters = dict(module.named_parameters())
    if not parameters or any(p.device.type != "cpu" for p in parameters.values()):
        return None
    dtype = torch.get_autocast_dtype("cpu")
    return {name: p.detach().to(dtype) for name, p in parameters.items()}


def call_shared(module: nn.Module, reduced: dict[str, torch.Tensor] | None, *args: Any) -> Any:
    """``module(*args)``, its parameters read from ``reduced`` (``shared_parameters``) when given.

    Each parameter is read through ``read_shared``: the products use the shared copy,
    and each call's gradient goes back to the fp32 parameter, summed in fp32.
    """
    if reduced is None:
        return module(*args)
    parameters = {name: read_shared(p, reduced[name]) for name, p in module.named_parameters()}
    return torch.func.functional_call(module, parameters, args)
