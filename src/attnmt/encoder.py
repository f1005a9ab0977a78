"""The encoder: embedding layer, then stacked (bi)directional LSTM or GRU cells.

As in the lecture, every source word is looked up in an embedding layer and the
sequence is unrolled through recurrent cells whose cell and hidden states start
at zero. The encoder gives one output vector per source word (the values that
attention weighs) and its final state, which initialises the decoder; in the
plain encoder-decoder that final state is the only thing the decoder sees.

Sequences are packed, so padding never changes an output or a final state.
With ``bidirectional`` each direction has hidden_size // 2 units and the two are
concatenated (Bahdanau sec. 3.2), so outputs always have ``hidden_size`` features.

Dimension letters: B batch, S source positions, E embedding size, H hidden size,
L layers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

#: Recurrent cell types by config name (``model.rnn``).
RNN: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU}

#: An RNN state: (h, c) for an LSTM, h for a GRU; each (L, B, H).
RNNState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class Encoder(nn.Module):
    """Embeds the source and runs it through the recurrent layers."""

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        layers: int,
        rnn: str,
        bidirectional: bool,
        dropout: float,
        pad_id: int,
    ) -> None:
        super().__init__()
        if bidirectional and hidden_size % 2:
            raise ValueError(f"a bidirectional encoder needs an even hidden_size, got {hidden_size}")
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.rnn = RNN[rnn](
            embedding_size,
            hidden_size // 2 if bidirectional else hidden_size,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[torch.Tensor, RNNState]:
        """Encode ``src`` (B, S) of true lengths ``src_lengths`` (B,).

        Returns the encoder outputs (B, S, H), zero on padding, and the final state
        (L, B, H) per layer, directions concatenated, ready to start the decoder.
        """
        embedded = self.dropout(self.embedding(src))  # (B, S, E)
        packed = pack_padded_sequence(embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_outputs, final = self.rnn(packed)
        outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=src.size(1))
        if isinstance(final, tuple):
            return outputs, (self._join_directions(final[0]), self._join_directions(final[1]))
        return outputs, self._join_directions(final)  # (B, S, H), (L, B, H)

    def _join_directions(self, state: torch.Tensor) -> torch.Tensor:
        """(L * D, B, H / D) -> (L, B, H): concatenate forward and backward per layer."""
        if not self.bidirectional:
            return state
        layers_x2, batch, half = state.shape
        return state.view(layers_x2 // 2, 2, batch, half).transpose(1, 2).reshape(layers_x2 // 2, batch, 2 * half)
