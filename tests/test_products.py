"""The fp32 products on oneDNN: the same products as torch's to fp32 rounding, only where asked for."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from attnmt import products
from attnmt.errors import AttnmtError
from attnmt.products import choose_onednn, onednn_pays, onednn_products
from conftest import record_packed_finds

pytestmark = pytest.mark.skipif(not products.onednn_available(), reason="this torch build has no oneDNN matmul")

SHAPES = [(1, 1, 1), (3, 5, 7), (33, 64, 130), (2, 512, 300), (300, 40, 17)]


def _layouts(m: int, k: int, n: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """a (M, K) and b (K, N) stored row-major, transposed (column-major), and as strided slices."""
    return {
        "plain": (torch.randn(m, k), torch.randn(k, n)),
        "a transposed": (torch.randn(k, m).t(), torch.randn(k, n)),
        "b transposed": (torch.randn(m, k), torch.randn(n, k).t()),
        "both transposed": (torch.randn(k, m).t(), torch.randn(n, k).t()),
        "slices": (torch.randn(m, 2 * k)[:, ::2], torch.randn(k, 3 * n)[:, ::3]),
        "a tall, transposed": (torch.randn(k, 40 * m).t(), torch.randn(k, n)),  # dW = g^T x turned around
    }


class _Counter:
    """Counts calls of oneDNN's matmul while installed in place of ``products._LINEAR``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.real = products._LINEAR
        monkeypatch.setattr(products, "_LINEAR", self)

    def __call__(self, *args: object) -> torch.Tensor:
        self.calls += 1
        return self.real(*args)


@pytest.mark.parametrize("layout", list(_layouts(1, 1, 1)))
@pytest.mark.parametrize("shape", SHAPES)
def test_mm_and_addmm_agree_with_float64(shape: tuple[int, int, int], layout: str) -> None:
    torch.manual_seed(0)
    a, b = _layouts(*shape)[layout]
    bias = torch.randn(2 * b.size(1))[::2] if layout == "slices" else torch.randn(b.size(1))
    with onednn_products():
        product, biased = a @ b, torch.addmm(bias, a, b)
    exact = a.double() @ b.double()
    # fp32 sums of K + 1 terms are exact to (K + 1) * 2^-24 of the sum of their magnitudes (Higham, Accuracy and
    # Stability of Numerical Algorithms, sec. 3.1), whatever order a library adds them in
    scale = (a.abs().double() @ b.abs().double()).max().item()
    bound = (shape[1] + 1) * 2.0**-24
    assert product.shape == biased.shape == exact.shape and product.is_contiguous() and biased.is_contiguous()
    assert (product.double() - exact).abs().max().item() <= bound * scale
    assert (biased.double() - exact - bias.double()).abs().max().item() <= bound * (scale + bias.abs().max().item())


def test_only_fp32_products_inside_the_block_go_to_onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _Counter(monkeypatch)
    a, b, bias = torch.randn(20, 30), torch.randn(30, 40), torch.randn(40)
    mine = (a @ b, torch.addmm(bias, a, b))
    assert counter.calls == 0  # nothing before the block
    with onednn_products():
        inside = (a @ b, torch.addmm(bias, a, b))
        assert counter.calls == 2
        kept = {
            "bf16": a.bfloat16() @ b.bfloat16(),
            "float64": a.double() @ b.double(),
            "scaled": torch.addmm(bias, a, b, beta=0.5),
            "full added matrix": torch.addmm(torch.ones(20, 40), a, b),
        }
        assert counter.calls == 2  # none of these: torch's own kernels
    with onednn_products(enabled=False):
        assert torch.equal(a @ b, mine[0])
    assert counter.calls == 2
    assert torch.equal(a @ b, mine[0]) and torch.equal(torch.addmm(bias, a, b), mine[1])  # torch's bits after
    assert torch.allclose(inside[0], mine[0], atol=1e-5) and torch.allclose(inside[1], mine[1], atol=1e-5)
    assert torch.equal(kept["bf16"], a.bfloat16() @ b.bfloat16())
    assert torch.equal(kept["float64"], a.double() @ b.double())
    assert torch.equal(kept["scaled"], torch.addmm(bias, a, b, beta=0.5))
    assert torch.equal(kept["full added matrix"], torch.addmm(torch.ones(20, 40), a, b))


def test_the_block_belongs_to_its_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _Counter(monkeypatch)
    a, b = torch.randn(20, 30), torch.randn(30, 40)
    other: list[torch.Tensor] = []
    with onednn_products():
        thread = threading.Thread(target=lambda: other.append(a @ b))
        thread.start()
        thread.join()
    assert counter.calls == 0 and torch.equal(other[0], a @ b)


@pytest.mark.parametrize("rnn", [nn.GRU, nn.LSTM])
def test_backward_runs_there_too_and_gives_the_same_gradients(monkeypatch: pytest.MonkeyPatch, rnn: type) -> None:
    """A recurrent layer and a linear layer, forward and backward: oneDNN agrees with torch's kernels."""
    torch.manual_seed(1)
    layer, output = rnn(16, 24, batch_first=True), nn.Linear(24, 50)
    inputs = torch.randn(7, 9, 16)

    def gradients() -> list[torch.Tensor]:
        layer.zero_grad()
        output.zero_grad()
        states, _ = layer(inputs)
        output(states).logsumexp(-1).sum().backward()
        return [p.grad.clone() for p in [*layer.parameters(), *output.parameters()]]

    expected = gradients()
    counter = _Counter(monkeypatch)
    with onednn_products():
        found = gradients()
    assert counter.calls > 0
    for mine, theirs in zip(found, expected):
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5)


def test_where_onednn_pays() -> None:
    assert onednn_pays("vendor_id : AuthenticAMD\nflags : fpu avx2 avx512f avx512bw")
    assert not onednn_pays("vendor_id : AuthenticAMD\nflags : fpu avx2")  # not measured: torch's default
    assert not onednn_pays("vendor_id : GenuineIntel\nflags : fpu avx2 avx512f")  # MKL is fast there
    assert onednn_pays("vendor_id : AuthenticAMD\nflags : fpu avx2", decoding=True)  # packed weights pay there
    assert not onednn_pays("vendor_id : GenuineIntel\nflags : fpu avx2", decoding=True)
    assert not onednn_pays("vendor_id : ARM\nflags : fp asimd", decoding=True)


def test_the_setting_is_checked() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not choose_onednn("torch", cpu)
    assert choose_onednn("onednn", cpu)
    assert not choose_onednn("auto", cuda)
    assert choose_onednn("auto", cpu) == products.auto_onednn(cpu)
    assert choose_onednn("auto", cpu, "decoding.matmul") == products.auto_onednn(cpu, decoding=True)
    with pytest.raises(AttnmtError, match=r"^decoding.matmul: onednn is for a CPU"):
        choose_onednn("onednn", cuda, "decoding.matmul")


def _layers() -> nn.Module:
    torch.manual_seed(2)
    return nn.ModuleDict({"rnn": nn.GRU(16, 24, batch_first=True), "output": nn.Linear(24, 50)})


def _decode(layers: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    states, _ = layers["rnn"](inputs)
    return layers["output"](states)


def test_packed_weights_give_the_products_of_the_weights_themselves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every weight matrix of the linear layers and RNNs is packed, found by identity, and agrees to fp32."""
    layers = _layers().eval()
    packed = products.PackedWeights([layers])
    assert len(packed.entries) == 3  # the GRU's two matrices and the output layer's; no biases
    found = record_packed_finds(monkeypatch)
    inputs = torch.randn(9, 5, 16)
    with torch.no_grad():
        plain = _decode(layers, inputs)
        with onednn_products(True, packed):
            fast = _decode(layers, inputs)
    assert found and all(found)
    assert torch.allclose(fast, plain, rtol=1e-5, atol=1e-6)
    with onednn_products(True, packed), torch.no_grad():
        found.clear()
        torch.randn(4, 24) @ torch.randn(24, 50)  # not a packed weight: read in place
    assert found == [False]


@pytest.mark.skipif(
    not products.auto_onednn(torch.device("cpu"), decoding=True), reason="measured on the CPUs auto chooses it for"
)
def test_with_packed_weights_a_row_does_not_depend_on_the_other_rows() -> None:
    layers = _layers().eval()
    packed = products.PackedWeights([layers])
    inputs = torch.randn(40, 3, 16)
    with torch.no_grad(), onednn_products(True, packed):
        together = _decode(layers, inputs)
        for rows in (1, 2, 5, 17):
            assert torch.equal(_decode(layers, inputs[:rows]), together[:rows])


def test_a_weight_changed_in_place_is_read_again() -> None:
    layers = _layers()
    packed = products.PackedWeights([layers])
    weight = layers["output"].weight
    assert packed.find(weight) is not None
    with torch.no_grad():
        weight.mul_(-2.0)  # as load_state_dict or a (non-fused) optimiser step would
    assert packed.find(weight) is None
    inputs = torch.randn(6, 4, 16)
    with torch.no_grad():
        expected = _decode(layers, inputs)
        with onednn_products(True, packed):  # the stale copy is not used
            assert torch.allclose(_decode(layers, inputs), expected, rtol=1e-5, atol=1e-6)
