"""Device and precision choice: bf16 only where the hardware computes it natively."""

from __future__ import annotations

import pytest
import torch

from attnmt.device import choose_precision, cpu_supports_bf16, pick_device
from attnmt.errors import AttnmtError


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
