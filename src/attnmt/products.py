"""The matrix products: which library multiplies fp32 matrices on a CPU.

Every layer of the lecture's model is matrix products (the RNN gates, attention's
W_a and W_c, the output layer), and on a CPU they are most of the time of a
training step or a search. torch sends fp32 products to Intel's MKL (sgemm) and
bf16 ones to oneDNN. On AMD CPUs MKL leaves AVX-512 unused, while oneDNN uses it:
on a 2-core AMD EPYC with AVX-512 (torch 2.13.0, 2 threads) the same fp32
2048 x 2048 product ran at 205 GFLOP/s through MKL and 472 through oneDNN, and
the products of a training step at 178-219 against 317-499
(``benchmarks/matmul_speed.py``).

``onednn_products()`` sends the fp32 ``mm`` and ``addmm`` of CPU tensors made in
the calling thread, in the forward pass and in autograd's backward pass, to
oneDNN's matmul primitive. The arithmetic is the same (fp32 multiply-adds summed
in fp32), in another order, so results differ from MKL's in the last bits, as
two BLAS libraries do. Other dtypes, other devices and the products oneDNN's
primitive does not take as they are (an ``addmm`` whose added matrix is not a
bias row, scaled products) run on torch's own kernels, bit for bit as before.
Training (``training.matmul``, fp32 only) and decoding (``decoding.matmul``)
use it where ``onednn_pays``: measured there, fp32 updates of the matched model
1.5x faster, decoding test2016 1.4-1.8x faster with the same translations.

The rerouting is torch.library's: kernels registered for aten::mm and aten::addmm
on the CPU, once per process, which hand back to torch's kernels (``mm.out``,
``addmm.out``) unless ``onednn_products`` is active in the calling thread.
Dimension letters: M rows, K shared, N columns.

While decoding, the weights do not change, and ``PackedWeights`` keeps each
weight matrix of a model's linear layers and RNNs in the layout oneDNN's
kernels read (a reorder it otherwise redoes in every product). Measured on one
core of the machine above: 5-21 % faster products at 64-320 rows, 1.35-2.3x at
5-20 rows, as beams finish; the same bits for two rows or more, and a row's
result no longer depends on the number of rows (a single row is otherwise
summed in another order).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from attnmt.errors import AttnmtError

_state = threading.local()
_registered: list[torch.library.Library] = []
_register_lock = threading.Lock()


def _active() -> bool:
    return getattr(_state, "depth", 0) > 0


def _find_linear() -> Any:
    """oneDNN's matmul with a bias row, as torch exposes it (None in a build without it)."""
    namespace = getattr(torch.ops, "mkldnn", None)
    packet = getattr(namespace, "_linear_pointwise", None) if namespace is not None else None
    return getattr(packet, "default", None) if packet is not None else None


_LINEAR = _find_linear()


def _fits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """fp32 matrices with something to multiply: what oneDNN takes here."""
    return (
        a.dtype == torch.float32
        and b.dtype == torch.float32
        and a.dim() == 2
        and b.dim() == 2
        and a.numel() > 0
        and b.numel() > 0
    )


def _plain(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` if it is row- or column-major (oneDNN reads either in place), else a row-major copy."""
    return matrix if 1 in (matrix.stride(0), matrix.stride(1)) else matrix.contiguous()


def _onednn(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """a @ b (+ bias) as oneDNN's X W^T + bias, X = a (M, K) and W = b^T (N, K), read in place.

    One case is turned around. A weight gradient dW = g^T x has a column-major
    a = g^T; oneDNN transposes it internally, which for the output layer's
    (5376 x 2000) g^T costs as much as the product. There (b^T a^T)^T is computed
    instead when b and the result are smaller than a: b^T made row-major, a read in
    place as W, the (N, M) result transposed back (measured for the output layer:
    31 against 49 ms; MKL 51 ms).
    """
    linear = _LINEAR
    a, b = _plain(a), _plain(b)
    packed: PackedWeights | None = getattr(_state, "packed", None)
    layout = packed.find(b.t()) if packed is not None else None
    if layout is not None:
        return linear(a, layout, bias, "none", [], "")
    if bias is None and a.stride(0) == 1 and a.size(1) > 1 and b.numel() + a.size(0) * b.size(1) < a.numel():
        return linear(b.t().contiguous(), a, None, "none", [], "").t().contiguous()
    return linear(a, b.t(), bias, "none", [], "")


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """aten::mm on the CPU: oneDNN for fp32 when active, else torch's own kernel (via mm.out)."""
    if _active() and _fits(a, b):
        return _onednn(a, b, None)
    out = torch.empty((a.size(0), b.size(1)), dtype=a.dtype, device=a.device)
    return torch.ops.aten.mm.out(a, b, out=out)


def _addmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta: float = 1, alpha: float = 1) -> torch.Tensor:
    """aten::addmm on the CPU: oneDNN for fp32 bias-row products when active, else torch's own kernel."""
    row = bias.dim() == 1 or (bias.dim() == 2 and bias.size(0) == 1)
    if (
        _active()
        and _fits(a, b)
        and beta == 1
        and alpha == 1
        and row
        and bias.dtype == torch.float32
        and bias.size(-1) == b.size(1)
    ):
        return _onednn(a, b, bias.reshape(-1).contiguous())
    out = torch.empty((a.size(0), b.size(1)), dtype=a.dtype, device=a.device)
    return torch.ops.aten.addmm.out(bias, a, b, beta=beta, alpha=alpha, out=out)


def _register() -> None:
    """Register the CPU kernels of aten::mm and aten::addmm, once per process."""
    with _register_lock:
        if _registered:
            return
        library = torch.library.Library("aten", "IMPL")  # kernels for existing operators
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel": that is the point
            library.impl("mm", _mm, "CPU")
            library.impl("addmm", _addmm, "CPU")
        _registered.append(library)


def onednn_available() -> bool:
    """True if this torch build has oneDNN and exposes its matmul."""
    return torch.backends.mkldnn.is_available() and _LINEAR is not None


def onednn_pays(cpuinfo: str, decoding: bool = False) -> bool:
    """Whether oneDNN is the faster fp32 library on the CPU ``cpuinfo`` (/proc/cpuinfo) describes.

    Measured: AVX-512 on AMD, for training and decoding. For decoding also AVX2
    alone on AMD, approximated on an AVX-512 EPYC with torch, oneDNN and MKL
    limited to AVX2: test2016 1.13-1.21x (matched GRU model) and 1.05-1.07x
    (quickstart LSTM) faster with packed weights, the same 1,000 translations;
    training there gained 1.02x, so it keeps torch's default. Intel's MKL takes
    its fast paths on Intel CPUs, which keep torch's default too.
    """
    if "GenuineIntel" in cpuinfo:
        return False
    return "avx512f" in cpuinfo or (decoding and "avx2" in cpuinfo)


def auto_onednn(device: torch.device, decoding: bool = False) -> bool:
    """Whether fp32 products on ``device`` should go to oneDNN (``onednn_pays`` on this CPU)."""
    if device.type != "cpu" or not onednn_available():
        return False
    try:
        return onednn_pays(Path("/proc/cpuinfo").read_text(), decoding)
    except OSError:
        return False


def choose_onednn(setting: str, device: torch.device, key: str = "training.matmul") -> bool:
    """Whether fp32 products run on oneDNN for the value ``setting`` (auto, torch or onednn) of ``key``."""
    if setting == "torch":
        return False
    if setting == "onednn":
        if device.type != "cpu":
            raise AttnmtError(f"{key}: onednn is for a CPU, and this run is on {device.type}: use auto or torch")
        if not onednn_available():
            raise AttnmtError(f"{key}: onednn: this torch build has no oneDNN matmul; use auto or torch")
        return True
    return auto_onednn(device, decoding=key.startswith("decoding."))


def _key(weight: torch.Tensor) -> tuple[int, ...]:
    return (weight.data_ptr(), *weight.shape, *weight.stride())


class PackedWeights:
    """Models' fp32 weight matrices W (N, K) in oneDNN's layout, for products X W^T while decoding.

    Made once per ``Translator`` (before any decoding worker is forked, so the
    workers share it) from the weights of its ``nn.Linear`` layers and RNNs on
    the CPU. A product uses the packed copy only if its W is one of these very
    tensors, unchanged since: a weight changed in place through torch's ops (its
    version counter moves) is read directly again. Writes that do not move it
    (``.data``, fused optimisers) are not seen: a model that is trained further
    needs a new ``PackedWeights``.
    """

    #: The rows oneDNN is told to expect; measured: 5, 64 and 320 give the same speed and bits.
    ROWS_HINT = 64

    def __init__(self, modules: Iterable[torch.nn.Module]) -> None:
        reorder = torch.ops.mkldnn._reorder_linear_weight
        self.entries: dict[tuple[int, ...], tuple[torch.Tensor, int, torch.Tensor]] = {}
        for layer in (layer for module in modules for layer in module.modules()):
            if not isinstance(layer, (torch.nn.Linear, torch.nn.RNNBase)):
                continue
            for weight in layer.parameters(recurse=False):
                if weight.dim() == 2 and weight.dtype == torch.float32 and weight.device.type == "cpu":
                    with torch.no_grad():
                        layout = reorder(weight.detach(), self.ROWS_HINT)
                    self.entries[_key(weight)] = (weight, weight._version, layout)

    def find(self, weight: torch.Tensor) -> torch.Tensor | None:
        """The packed copy of ``weight`` (N, K), or None if it is not one of the packed weights as they were."""
        entry = self.entries.get(_key(weight))
        if entry is None or entry[0]._version != entry[1]:
            return None
        return entry[2]


@contextmanager
def onednn_products(enabled: bool = True, packed: PackedWeights | None = None) -> Iterator[None]:
    """Within this block, this thread's fp32 CPU ``mm`` and ``addmm`` (and their gradients) run on oneDNN.

    With ``packed`` (decoding), products with those weights read their packed copies.
    """
    if not enabled or not onednn_available():
        yield
        return
    _register()
    outer = getattr(_state, "packed", None)
    _state.depth = getattr(_state, "depth", 0) + 1
    _state.packed = packed if packed is not None else outer
    try:
        yield
    finally:
        _state.depth -= 1
        _state.packed = outer
