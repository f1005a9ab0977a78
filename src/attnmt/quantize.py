"""int8 decoding on the CPU: int8 weights, activations quantised row by row.

``quantize_int8`` turns a trained model into one whose largest matrix products
run in int8 (fbgemm on x86): every ``nn.Linear`` (the output layer, Luong's
W_c, Bahdanau's W_o, the attention projections) and every RNN. Weights
are stored as int8 with one scale per output row (symmetric, per channel);
the model shrinks about 4x in memory and decoding, which is bound by reading
weights, gets faster. The RNNs (encoder and decoder, each direction) become
``Int8RNN``: torch's gate equations around int8 products, the input part of
all steps in one product. The embeddings stay float; where a Luong decoder's
RNN reads the word embedding alone (no input feeding), embedding and first
input product become one fp32 table of input gates per word.

**Activations are quantised per row, so a sentence translates the same alone
or in a batch.** PyTorch's dynamic quantisation (``quantize_dynamic``) picks
one activation scale for the whole batch from its largest value, so one
sentence's rounding depends on the others: measured on a trained model, 37 of
256 test sentences changed between batches of 64 and of 16. Here every row x
is first divided by its own largest magnitude m = max_k |x_k|, so all rows lie
in [-1, 1]; two anchor rows (+1 and -1) fix the range the int8 kernel sees, so
its scale is the same in every call; and the product is scaled back by m:

    y = m * (W_q (x / m)) + b

Integer products are exact, so row i's result depends on row i alone (tests:
``test_quantize.py``). Each row also uses its full int8 range, where one scale
per batch leaves small rows with few levels.

It is for decoding only (``translate``, ``evaluate``, ``serve``,
``Translator.load(..., quantize="int8")``), on the CPU.
"""

from __future__ import annotations

import warnings
from typing import TypeVar

import torch
from torch import nn

from attnmt.decoder import LuongDecoder
from attnmt.encoder import RNNState
from attnmt.errors import InputError

#: ``--quantize`` choices ("none": full precision, the same as not asking).
QUANTIZATIONS = ("none", "int8")


M = TypeVar("M", bound=nn.Module)


def _pick_engine() -> None:
    """fbgemm on x86, qnnpack on ARM; and silence torch's notice about quantised tensor types."""
    engines = torch.backends.quantized.supported_engines
    if "fbgemm" in engines:
        torch.backends.quantized.engine = "fbgemm"
    elif "qnnpack" in engines:
        torch.backends.quantized.engine = "qnnpack"
    # torch 2.13 announces, at every quantised call, that these tensor types will be replaced one day
    warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")


class RowwiseInt8Linear(nn.Module):
    """y = m * (W_q (x / m)) + b: int8 weights (a scale per output row), each input row its own scale."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        weight = weight.detach().float()
        self.in_features, self.out_features = weight.size(1), weight.size(0)
        observer = torch.ao.quantization.PerChannelMinMaxObserver(
            ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric
        )
        observer(weight)
        scales, zero_points = observer.calculate_qparams()
        quantized = torch.quantize_per_channel(weight, scales.double(), zero_points.long(), 0, torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(quantized, None)
        self.bias = None if bias is None else bias.detach().float().clone()
        anchors = torch.zeros(2, self.in_features)
        anchors[0, 0], anchors[1, 0] = 1.0, -1.0  # the int8 kernel's range is [-1, 1] in every call
        self.anchors = anchors

    @classmethod
    def from_float(cls, linear: nn.Linear) -> RowwiseInt8Linear:
        return cls(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of x (..., in) -> (..., out); each row is scaled to [-1, 1], multiplied in int8, scaled back."""
        rows = x.reshape(-1, self.in_features).float()
        count = rows.size(0)
        magnitude = rows.abs().amax(dim=1, keepdim=True).clamp_min_(torch.finfo(torch.float32).tiny)  # m: (N, 1)
        normalised = rows.new_empty(count + 2, self.in_features)
        torch.div(rows, magnitude, out=normalised[:count])
        normalised[count:] = self.anchors
        products = torch.ops.quantized.linear_dynamic(normalised, self.packed, True)[:count]
        out = products.mul_(magnitude) if self.bias is None else torch.addcmul(self.bias, products, magnitude)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights, rowwise activations"


class Int8RNN(nn.Module):
    """A unidirectional, batch-first GRU or LSTM whose products are ``RowwiseInt8Linear``.

    The gate equations are torch's own (``nn.GRU``, ``nn.LSTM``), so the state
    layout and meaning are unchanged: GRU h, LSTM (h, c), each (L, B, H). With
    ``gates_in`` the inputs already are the first layer's input gates W_i x + b_i
    (see ``_fold_embeddings_into_gates``).
    """

    def __init__(self, rnn: nn.GRU | nn.LSTM, gates_in: bool = False) -> None:
        super().__init__()
        if rnn.bidirectional or not rnn.batch_first:
            raise ValueError("Int8RNN replaces unidirectional, batch-first RNNs only")
        self.is_lstm = isinstance(rnn, nn.LSTM)
        self.layers, self.hidden_size, self.gates_in = rnn.num_layers, rnn.hidden_size, gates_in
        self.input_projections = nn.ModuleList()  # W_i* x + b_i*, per layer
        self.hidden_projections = nn.ModuleList()  # W_h* h + b_h*, per layer
        self.step_projections = nn.ModuleList()  # LSTM, one step: [W_i W_h] [x; h] + b_i + b_h
        for layer in range(rnn.num_layers):
            w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}", None), getattr(rnn, f"bias_hh_l{layer}", None)
            given = layer == 0 and gates_in  # the inputs are W_i x + b_i already: nothing to multiply
            self.hidden_projections.append(RowwiseInt8Linear(w_hh, b_hh))
            self.input_projections.append(nn.Identity() if given else RowwiseInt8Linear(w_ih, b_ih))
            if self.is_lstm:
                both = None if b_ih is None or b_hh is None else b_ih + b_hh
                joint = nn.Identity() if given else RowwiseInt8Linear(torch.cat([w_ih, w_hh], dim=1), both)
                self.step_projections.append(joint)

    def _gru_cell(self, layer: int, x_gates: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """r = sigma(W_ir x + W_hr h), z = sigma(W_iz x + W_hz h), n = tanh(W_in x + r (W_hn h)); h' = (1-z) n + z h."""
        x_r, x_z, x_n = x_gates.chunk(3, dim=-1)
        h_r, h_z, h_n = self.hidden_projections[layer](h).chunk(3, dim=-1)
        reset, update = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        candidate = torch.tanh(torch.addcmul(x_n, reset, h_n))
        return torch.lerp(candidate, h, update)

    @staticmethod
    def _lstm_cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """i, f, g, o = the gates' pre-activations W_i x + W_h h + b; c' = f c + i g; h' = o tanh(c')."""
        i, f, g, o = gates.chunk(4, dim=-1)
        cell = torch.addcmul(torch.sigmoid(f) * c, torch.sigmoid(i), torch.tanh(g))
        return torch.sigmoid(o) * torch.tanh(cell), cell

    def _initial(self, inputs: torch.Tensor, state: RNNState | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer h (and c) lists; zeros when no state is given, as in torch's RNNs."""
        if state is None:
            zeros = inputs.new_zeros(inputs.size(0), self.hidden_size, dtype=torch.float32)
            return [zeros] * self.layers, [zeros] * self.layers if self.is_lstm else []
        hidden = list((state[0] if isinstance(state, tuple) else state).float().unbind(0))
        return hidden, list(state[1].float().unbind(0)) if isinstance(state, tuple) else []

    def _lstm_step(
        self, x: torch.Tensor, hidden: list[torch.Tensor], cells: list[torch.Tensor]
    ) -> tuple[torch.Tensor, RNNState]:
        """One LSTM step: W_i x + W_h h as one product of [x; h] with [W_i W_h] per layer, then the gates."""
        for layer in range(self.layers):
            if layer == 0 and self.gates_in:
                gates = x + self.hidden_projections[0](hidden[0])
            else:
                gates = self.step_projections[layer](torch.cat([x, hidden[layer]], dim=-1))
            hidden[layer], cells[layer] = self._lstm_cell(gates, cells[layer])
            x = hidden[layer]
        return x.unsqueeze(1), (torch.stack(hidden), torch.stack(cells))

    def forward(self, inputs: torch.Tensor, state: RNNState | None = None) -> tuple[torch.Tensor, RNNState]:
        """inputs (B, T, I), state -> outputs of the top layer (B, T, H), final state.

        Layer by layer: the input part of the gates for all T steps in one product,
        then the recurrence one step at a time.
        """
        hidden, cells = self._initial(inputs, state)
        sequence = inputs.float()
        if self.is_lstm and sequence.size(1) == 1:  # a decoding step
            return self._lstm_step(sequence[:, 0], hidden, cells)
        for layer in range(self.layers):
            input_gates = self.input_projections[layer](sequence).unbind(1)  # T x (B, G)
            outputs = []
            for x_gates in input_gates:
                if self.is_lstm:
                    gates = x_gates + self.hidden_projections[layer](hidden[layer])
                    hidden[layer], cells[layer] = self._lstm_cell(gates, cells[layer])
                else:
                    hidden[layer] = self._gru_cell(layer, x_gates, hidden[layer])
                outputs.append(hidden[layer])
            sequence = torch.stack(outputs, dim=1)
        final_hidden = torch.stack(hidden)
        final: RNNState = (final_hidden, torch.stack(cells)) if self.is_lstm else final_hidden
        return sequence, final


def _replace_layers(module: nn.Module) -> None:
    """Swap every nn.Linear and every unidirectional batch-first GRU/LSTM below ``module`` for its int8 twin."""
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, RowwiseInt8Linear.from_float(child))
        elif isinstance(child, (nn.GRU, nn.LSTM)) and child.batch_first and not child.bidirectional:
            setattr(module, name, Int8RNN(child))
        else:
            _replace_layers(child)


def _fold_embeddings_into_gates(module: nn.Module) -> None:
    """Luong decoders without input feeding: embedding and first input product become one table.

    Their RNN's input is the previous word's embedding alone, so its input gates
    W_i E[y] + b_i (torch's gate equations) take one of V values. They are
    computed once in fp32, a (V, gates) table that replaces the embedding,
    and every decoding step looks its rows up instead of multiplying (for the
    quickstart's LSTM, a third of the step's RNN product).
    """
    for decoder in list(module.modules()):
        if not isinstance(decoder, LuongDecoder) or decoder.input_feeding:
            continue
        rnn = decoder.rnn
        if not isinstance(rnn, (nn.GRU, nn.LSTM)):
            continue
        weight, _, *biases = rnn.all_weights[0]  # layer 0: W_ih, W_hh, b_ih, b_hh
        table = nn.functional.linear(decoder.embedding.weight, weight, biases[0] if biases else None)  # (V, gates)
        decoder.rnn = Int8RNN(rnn, gates_in=True)  # type: ignore[assignment]
        decoder.embedding = nn.Embedding.from_pretrained(table.detach().float(), freeze=True)


def quantize_int8(model: M) -> M:
    """Convert ``model`` in place (eval mode, CPU) to int8 linear layers and RNNs; return it."""
    _pick_engine()
    with torch.no_grad():
        _fold_embeddings_into_gates(model.eval().cpu())
    _replace_layers(model)
    return model


def check_quantization(name: str | None, device: torch.device) -> None:
    """``name`` must be a known scheme, and int8 runs on the CPU only."""
    if name not in (None, *QUANTIZATIONS):
        raise InputError("quantize", f"must be one of {', '.join(QUANTIZATIONS)}, got {name!r}")
    if name in (None, "none"):
        return
    if device.type != "cpu":
        raise InputError("quantize", "int8 decoding runs on the CPU; add --device cpu")
