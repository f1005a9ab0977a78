"""Decoders: unroll an RNN over the target, attend to the encoder at every step.

Two decoders from the papers, one step API (``step``) shared by training, greedy
search, beam search and ``attnmt explain``:

- ``LuongDecoder`` (Luong et al. 2015, sec. 3): the RNN steps first, then its
  output h_t is the query; the attentional hidden state
  h~_t = tanh(W_c [c_t; h_t]) (eq. 5) goes to the output layer. With *input
  feeding* (sec. 3.3) h~_{t-1} is concatenated to the next RNN input, so steps
  must run one after another; without it the RNN runs over the whole target in
  one call and all attention is a few batched matrix products.
- ``BahdanauDecoder`` (Bahdanau et al. 2014, sec. 3.1 and appendix A): the
  *previous* state s_{t-1} is the query, the context c_t is fed into the RNN
  input with the previous word, and a deep output layer
  t_t = tanh(W_o [s_t; c_t; E y_{t-1}]) feeds the softmax.

With ``attention=None`` either decoder is the plain encoder-decoder the lecture
starts from: it sees the source only through the encoder's final state.

The vocabulary projection (``output_layer``) and softmax live in ``model.py``, applied once to the
outputs of all steps. Dimension letters: B batch, T target steps, S source
positions, E embedding size, H hidden size, L layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from attnmt.attention import Attention, AttentionOutput
from attnmt.config import ModelConfig
from attnmt.device import call_shared, read_shared, shared_copy, shared_parameters
from attnmt.dropout import Dropout
from attnmt.encoder import RNN, RNNState
from attnmt.local_attention import GlobalSpan, LocalMonotonic, build_span
from attnmt.vocab import PAD_ID


def _reorder_rnn_state(state: RNNState, indices: torch.Tensor) -> RNNState:
    if isinstance(state, tuple):
        return (state[0].index_select(1, indices), state[1].index_select(1, indices))
    return state.index_select(1, indices)


def _top_hidden(state: RNNState) -> torch.Tensor:
    """The top layer's hidden state h (B, H) of an LSTM (h, c) or GRU h state."""
    hidden = state[0] if isinstance(state, tuple) else state
    return hidden[-1]


@dataclass
class EncoderMemory:
    """What the decoder attends to: values, pre-projected keys and the source mask.

    ``encoder_outputs`` (B, S, H) are the values, ``keys`` (B, S, K) the result of
    ``Attention.project_keys`` (computed once per batch), ``src_mask`` (B, S) is True
    on real tokens. In beam search each row can serve ``beams`` consecutive decoder
    rows (the K hypotheses of one sentence): their K queries then meet the
    sentence's keys in one product, and the memory is never copied K times.
    ``shareable`` is False where a step's attention depends on more than its query
    (local-m's window follows the step index), so beams get copies instead.
    Under autocast ``reduced_outputs`` and ``reduced_keys`` are the values and keys
    in its dtype, cast once per batch (``device.shared_copy``), and
    ``step_parameters`` the same for the parameters of the modules every step runs
    (``Decoder.STEP_MODULES``, ``device.shared_parameters``); None and empty otherwise.
    """

    encoder_outputs: torch.Tensor
    keys: torch.Tensor
    src_mask: torch.Tensor
    beams: int = 1
    shareable: bool = True
    reduced_outputs: torch.Tensor | None = None
    reduced_keys: torch.Tensor | None = None
    step_parameters: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def for_beams(self, beams: int) -> EncoderMemory:
        """Memory for ``beams`` hypotheses per sentence (rows b * beams + k): shared, or copied."""
        if self.shareable:
            return replace(self, beams=beams)
        return self.reorder(torch.arange(self.src_mask.size(0), device=self.src_mask.device).repeat_interleave(beams))

    def reorder(self, indices: torch.Tensor) -> EncoderMemory:
        """Select (and repeat) decoder rows ``indices``.

        Shared memory keeps one row per sentence: ``indices`` then come in blocks of
        ``beams`` rows of one sentence (as beam search keeps them), and the sentence
        of block i is ``indices[i * beams] // beams``.
        """
        rows = indices[:: self.beams] // self.beams if self.beams > 1 else indices
        return replace(
            self,
            encoder_outputs=self.encoder_outputs.index_select(0, rows),
            keys=self.keys.index_select(0, rows),
            src_mask=self.src_mask.index_select(0, rows),
            reduced_outputs=None,  # other rows: steps cast them again, as autocast does
            reduced_keys=None,
        )


@dataclass
class DecoderState:
    """Everything a decoder carries from one step to the next.

    ``rnn`` is the recurrent state (L, B, H); ``attentional`` (B, H) is Luong's
    h~_{t-1} for input feeding (None otherwise); ``step`` is the target position t
    of the next step (0 for the first word), the same for every row.
    """

    rnn: RNNState
    attentional: torch.Tensor | None = None
    step: int = 0

    def reorder(self, indices: torch.Tensor) -> DecoderState:
        """Select batch rows (beam search keeps the states of surviving hypotheses)."""
        attentional = None if self.attentional is None else self.attentional.index_select(0, indices)
        return DecoderState(_reorder_rnn_state(self.rnn, indices), attentional, self.step)


@dataclass
class DecoderOutput:
    """Per-step outputs before the vocabulary projection, plus what attention did.

    ``outputs`` (B, T, H) feed the output layer; ``attention`` holds scores, weights
    (B, T, S) and context (B, T, H), or is None for the plain encoder-decoder;
    ``queries`` (B, T, H) are the vectors that were compared with the keys.
    """

    outputs: torch.Tensor
    attention: AttentionOutput | None
    queries: torch.Tensor


def _per_sentence(query: torch.Tensor, beams: int) -> torch.Tensor:
    """Queries (B*K, 1, H) of one step as K queries per sentence: (B, K, H)."""
    if query.size(1) != 1:
        raise ValueError(f"memory shared by beams serves one step at a time, got {query.size(1)} steps")
    return query.reshape(-1, beams, query.size(2))


def _per_row(attention: AttentionOutput) -> AttentionOutput:
    """Undo ``_per_sentence`` on attention's results: (B, K, ...) -> (B*K, 1, ...)."""

    def rows(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(tensor.size(0) * tensor.size(1), 1, *tensor.shape[2:])

    aligned = None if attention.aligned is None else rows(attention.aligned)
    return AttentionOutput(rows(attention.context), rows(attention.weights), rows(attention.scores), aligned)


def _stack_steps(steps: list[DecoderOutput]) -> DecoderOutput:
    """Concatenate single-step outputs along the time axis."""
    attention = None
    if steps[0].attention is not None:
        parts = [s.attention for s in steps if s.attention is not None]
        aligned = [p.aligned for p in parts if p.aligned is not None]
        attention = AttentionOutput(
            context=torch.cat([p.context for p in parts], dim=1),
            weights=torch.cat([p.weights for p in parts], dim=1),
            scores=torch.cat([p.scores for p in parts], dim=1),
            aligned=torch.cat(aligned, dim=1) if aligned else None,
        )
    return DecoderOutput(
        outputs=torch.cat([s.outputs for s in steps], dim=1),
        attention=attention,
        queries=torch.cat([s.queries for s in steps], dim=1),
    )


class Decoder(nn.Module):
    """Shared parts: target embedding, dropout, the step loop of teacher forcing."""

    #: The submodules every step runs (those a decoder has): under autocast their
    #: parameters are cast once per batch (``EncoderMemory.step_parameters``).
    STEP_MODULES = ("rnn", "W_c", "W_o", "attention", "span")

    def __init__(self, vocab_size: int, embedding_size: int, dropout: float, pad_id: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_id)
        self.dropout = Dropout(dropout)
        self.attention: Attention | None = None
        self.span: nn.Module = GlobalSpan()  # where attention may look (local_attention.py)

    def with_span(self, config: ModelConfig) -> Any:
        """Set where attention may look (``model.attention_span``, ``model.local_window``); return self."""
        if self.attention is not None:
            self.span = build_span(config.attention_span, config.hidden_size, config.local_window)
        return self

    def prepare_memory(self, encoder_outputs: torch.Tensor, src_mask: torch.Tensor) -> EncoderMemory:
        """What every step attends to: the values (B, S, H), keys projected once per batch, the mask."""
        keys = self.attention.project_keys(encoder_outputs) if self.attention is not None else encoder_outputs
        values, reduced_values = shared_copy(encoder_outputs)
        # dot, location and no attention use the values as keys: one copy serves both
        keys, reduced_keys = (values, reduced_values) if keys is encoder_outputs else shared_copy(keys)
        shareable = not isinstance(self.span, LocalMonotonic)
        step_parameters = {name: shared_parameters(getattr(self, name, None)) for name in self.STEP_MODULES}
        reduced = {name: copies for name, copies in step_parameters.items() if copies is not None}
        return EncoderMemory(values, keys, src_mask, 1, shareable, reduced_values, reduced_keys, reduced)

    def _run(self, name: str, memory: EncoderMemory, *args: Any) -> Any:
        """Run the step module ``name``, on the batch's shared reduced-precision parameters if there are any."""
        return call_shared(getattr(self, name), memory.step_parameters.get(name), *args)

    def initial_state(self, encoder_final: RNNState) -> DecoderState:
        """The decoder starts from the encoder's final state (the lecture's context vector)."""
        return DecoderState(encoder_final)

    def step(
        self, prev_tokens: torch.Tensor, state: DecoderState, memory: EncoderMemory
    ) -> tuple[DecoderOutput, DecoderState]:
        """One decoding step from the previous target words ``prev_tokens`` (B,)."""
        embedded = self.dropout(self.embedding(prev_tokens.unsqueeze(1)))  # (B, 1, E)
        return self.step_embedded(embedded, state, memory)

    def step_embedded(
        self, embedded: torch.Tensor, state: DecoderState, memory: EncoderMemory
    ) -> tuple[DecoderOutput, DecoderState]:
        raise NotImplementedError

    def forward(self, tgt_in: torch.Tensor, state: DecoderState, memory: EncoderMemory) -> DecoderOutput:
        """Teacher forcing over the target inputs ``tgt_in`` (B, T), step by step.

        Used when a step needs the previous step's result (input feeding, Bahdanau).
        """
        embedded = self.dropout(self.embedding(tgt_in))  # (B, T, E)
        steps = []
        for t in range(tgt_in.size(1)):
            output, state = self.step_embedded(embedded[:, t : t + 1], state, memory)
            steps.append(output)
        return _stack_steps(steps)

    def _attend(self, query: torch.Tensor, memory: EncoderMemory, first_step: int) -> AttentionOutput | None:
        """Attention of queries (B, T, H) for target steps first_step .. first_step + T - 1."""
        if self.attention is None:
            return None
        if memory.beams > 1:  # the K hypotheses of a sentence query its memory together
            together = self._attend(_per_sentence(query, memory.beams), replace(memory, beams=1), first_step)
            return None if together is None else _per_row(together)
        span = self._run("span", memory, query, memory.src_mask, first_step)
        keys, values = (
            read_shared(memory.keys, memory.reduced_keys),
            read_shared(memory.encoder_outputs, memory.reduced_outputs),
        )
        attention = self._run("attention", memory, query, keys, values, span.mask, span.bias)
        attention.aligned = span.aligned
        return attention


class LuongDecoder(Decoder):
    """Luong et al. 2015: RNN step, then global attention on its output, then h~_t."""

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        layers: int,
        rnn: str,
        attention: Attention | None,
        input_feeding: bool,
        dropout: float,
        pad_id: int,
    ) -> None:
        super().__init__(vocab_size, embedding_size, dropout, pad_id)
        self.attention = attention
        self.input_feeding = input_feeding
        self.hidden_size = hidden_size
        rnn_input = embedding_size + (hidden_size if input_feeding else 0)
        self.rnn = RNN[rnn](
            rnn_input, hidden_size, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        # W_c of Luong eq. 5: [c_t; h_t] -> h~_t
        self.W_c = nn.Linear(2 * hidden_size, hidden_size, bias=False) if attention is not None else None

    @classmethod
    def from_config(cls, config: ModelConfig, vocab_size: int, attention: Attention | None) -> LuongDecoder:
        """The decoder a ``model:`` config section describes."""
        return cls(
            vocab_size,
            config.embedding_size,
            config.hidden_size,
            config.layers,
            config.rnn,
            attention,
            config.input_feeding,
            config.dropout,
            PAD_ID,
        ).with_span(config)

    def initial_state(self, encoder_final: RNNState) -> DecoderState:
        if not self.input_feeding:
            return DecoderState(encoder_final)
        top = _top_hidden(encoder_final)  # (B, H)
        return DecoderState(encoder_final, top.new_zeros(top.size(0), self.hidden_size))  # h~_0 = 0

    def _attentional_hidden(self, rnn_outputs: torch.Tensor, memory: EncoderMemory, first_step: int) -> DecoderOutput:
        """Attention with the RNN outputs (B, T, H) as queries, then h~ = tanh(W_c [c; h]).

        Dropout applies to h~ (as in OpenNMT-py), before the output layer and before
        it is fed back with input feeding.
        """
        attention = self._attend(rnn_outputs, memory, first_step)
        if attention is None or self.W_c is None:
            return DecoderOutput(self.dropout(rnn_outputs), None, rnn_outputs)
        context = attention.context.to(rnn_outputs.dtype)
        attentional = torch.tanh(self._run("W_c", memory, torch.cat([context, rnn_outputs], dim=-1)))  # (B, T, H)
        return DecoderOutput(self.dropout(attentional), attention, rnn_outputs)

    def step_embedded(
        self, embedded: torch.Tensor, state: DecoderState, memory: EncoderMemory
    ) -> tuple[DecoderOutput, DecoderState]:
        rnn_input = embedded  # (B, 1, E)
        if self.input_feeding and state.attentional is not None:
            rnn_input = torch.cat([embedded, state.attentional.unsqueeze(1).to(embedded.dtype)], dim=-1)
        rnn_output, rnn_state = self._run("rnn", memory, rnn_input, state.rnn)  # (B, 1, H)
        output = self._attentional_hidden(rnn_output, memory, state.step)
        attentional = output.outputs.squeeze(1) if self.input_feeding else None
        return output, DecoderState(rnn_state, attentional, state.step + 1)

    def forward(self, tgt_in: torch.Tensor, state: DecoderState, memory: EncoderMemory) -> DecoderOutput:
        """Teacher forcing. Without input feeding, one RNN call and batched attention."""
        if self.input_feeding:
            return super().forward(tgt_in, state, memory)
        embedded = self.dropout(self.embedding(tgt_in))  # (B, T, E)
        # not on shared parameters: inside one call the RNN's steps would sum their gradients in bf16
        rnn_outputs, _ = self.rnn(embedded, state.rnn)  # (B, T, H)
        return self._attentional_hidden(rnn_outputs, memory, state.step)


class BahdanauDecoder(Decoder):
    """Bahdanau et al. 2014: attend from s_{t-1}, feed c_t into the RNN, deep output."""

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        layers: int,
        rnn: str,
        attention: Attention | None,
        dropout: float,
        pad_id: int,
    ) -> None:
        super().__init__(vocab_size, embedding_size, dropout, pad_id)
        self.attention = attention
        context_size = hidden_size if attention is not None else 0
        self.rnn = RNN[rnn](
            embedding_size + context_size,
            hidden_size,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        # Deep output (Bahdanau appendix A.2.2, with tanh in place of maxout): [s_t; c_t; E y_{t-1}] -> t_t
        self.W_o = nn.Linear(hidden_size + context_size + embedding_size, hidden_size, bias=False)

    @classmethod
    def from_config(cls, config: ModelConfig, vocab_size: int, attention: Attention | None) -> BahdanauDecoder:
        """The decoder a ``model:`` config section describes (``input_feeding`` does not apply)."""
        return cls(
            vocab_size,
            config.embedding_size,
            config.hidden_size,
            config.layers,
            config.rnn,
            attention,
            config.dropout,
            PAD_ID,
        ).with_span(config)

    def step_embedded(
        self, embedded: torch.Tensor, state: DecoderState, memory: EncoderMemory
    ) -> tuple[DecoderOutput, DecoderState]:
        query = _top_hidden(state.rnn).unsqueeze(1).to(embedded.dtype)  # s_{t-1}: (B, 1, H)
        attention = self._attend(query, memory, state.step)
        rnn_input = embedded
        if attention is not None:
            rnn_input = torch.cat([embedded, attention.context.to(embedded.dtype)], dim=-1)
        rnn_output, rnn_state = self._run("rnn", memory, rnn_input, state.rnn)  # s_t: (B, 1, H)
        deep_output = self._run("W_o", memory, torch.cat([rnn_output, rnn_input], dim=-1))
        output = self.dropout(torch.tanh(deep_output))  # t_t: (B, 1, H)
        return DecoderOutput(output, attention, query), DecoderState(rnn_state, step=state.step + 1)


#: Decoders by config name (``model.decoder``).
DECODERS: dict[str, type[LuongDecoder] | type[BahdanauDecoder]] = {"luong": LuongDecoder, "bahdanau": BahdanauDecoder}
