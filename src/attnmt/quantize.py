"""int8 decoding on the CPU: dynamic quantisation of the fully connected layers and the RNNs.

``quantize_int8`` applies PyTorch's dynamic quantisation (``torch.ao.quantization``)
to a trained model: the weights of every ``nn.Linear`` (the output layer, Luong's
W_c, the attention projections) and of the LSTM/GRU layers are stored as int8 with
one scale per output channel; activations are quantised on the fly, each call. The
embeddings stay float. The arithmetic of the largest matrix products runs in int8
(fbgemm on x86), which is where decoding spends its time; the model shrinks about
4x in memory. It is for decoding only (``translate``, ``evaluate``, ``serve``,
``Translator.load(..., quantize="int8")``), on the CPU.
"""

from __future__ import annotations

import warnings
from typing import TypeVar

import torch
from torch import nn

from attnmt.errors import InputError

#: ``--quantize`` choices ("none": full precision, the same as not asking).
QUANTIZATIONS = ("none", "int8")


M = TypeVar("M", bound=nn.Module)


def quantize_int8(model: M) -> M:
    """Convert ``model`` in place (eval mode, CPU) to dynamic int8 Linear/LSTM/GRU layers; return it."""
    engines = torch.backends.quantized.supported_engines
    if "fbgemm" in engines:
        torch.backends.quantized.engine = "fbgemm"
    elif "qnnpack" in engines:
        torch.backends.quantized.engine = "qnnpack"
    # torch 2.13 announces, at every quantised RNN call, that these tensor types will be replaced one day
    warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
    layers = {nn.Linear, nn.LSTM, nn.GRU}
    torch.ao.quantization.quantize_dynamic(model.eval().cpu(), layers, dtype=torch.qint8, inplace=True)
    return model


def check_quantization(name: str | None, device: torch.device) -> None:
    """``name`` must be a known scheme, and int8 runs on the CPU only."""
    if name not in (None, *QUANTIZATIONS):
        raise InputError("quantize", f"must be one of {', '.join(QUANTIZATIONS)}, got {name!r}")
    if name in (None, "none"):
        return
    if device.type != "cpu":
        raise InputError("quantize", "int8 dynamic quantisation decodes on the CPU; add --device cpu")
