"""The attention encoder-decoder: encoder, decoder, fully connected layer and softmax.

Reading order of the lecture::

    source words -> embedding -> encoder LSTMs          (Encoder.forward)
    decoder LSTMs, one step per output word              (Decoder.step / forward)
    similarity scores -> softmax -> attention values     (attention.py)
    [attention values; decoder output] -> FC -> softmax  (decoder W_c / W_o, then ``output_layer``)
    pick the next word, feed it back, stop at <EOS>       (search.py)

``Seq2Seq.forward`` computes the logits of every target position under teacher
forcing; the vocabulary projection (``output_layer``) runs once over all positions.
``Seq2Seq.step`` is the single step that greedy search, beam search and
``attnmt explain`` share.

Dimension letters: B batch, S source positions, T target steps, H hidden size,
V target vocabulary size.
"""

from __future__ import annotations

import torch
from torch import nn

from attnmt.attention import build_attention
from attnmt.config import ModelConfig
from attnmt.decoder import DECODERS, Decoder, DecoderOutput, DecoderState, EncoderMemory
from attnmt.encoder import Encoder
from attnmt.vocab import PAD_ID


class Seq2Seq(nn.Module):
    """Encoder, decoder and ``output_layer``, the fully connected layer to the vocabulary (H -> V logits).

    With tied embeddings (Press & Wolf 2017; ``model.tie_embeddings``) the output
    layer's weights *are* the target embedding matrix (V, E), and a linear
    ``output_projection`` (H -> E) comes first when E != H; with a joint
    vocabulary the source embedding is the same matrix too. Fewer parameters to
    learn from a small corpus, and an output layer E/H as costly.
    """

    def __init__(
        self, encoder: Encoder, decoder: Decoder, output_layer: nn.Linear, output_projection: nn.Linear | None = None
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.output_projection = output_projection
        self.output_layer = output_layer

    @classmethod
    def from_config(
        cls, config: ModelConfig, src_vocab_size: int, tgt_vocab_size: int, max_source_length: int
    ) -> Seq2Seq:
        """Build the model a ``model:`` config section describes, initialised uniformly."""
        encoder = Encoder(
            src_vocab_size,
            config.embedding_size,
            config.hidden_size,
            config.layers,
            config.rnn,
            config.bidirectional,
            config.dropout,
            PAD_ID,
        )
        attention = build_attention(config.attention, config.hidden_size, config.hidden_size, max_source_length)
        decoder = DECODERS[config.decoder].from_config(config, tgt_vocab_size, attention)
        if not config.tie_embeddings:
            model = cls(encoder, decoder, nn.Linear(config.hidden_size, tgt_vocab_size))
        else:
            projection = None
            if config.hidden_size != config.embedding_size:
                projection = nn.Linear(config.hidden_size, config.embedding_size, bias=False)
            model = cls(encoder, decoder, nn.Linear(config.embedding_size, tgt_vocab_size), projection)
            model.output_layer.weight = decoder.embedding.weight  # one (V, E) matrix
            if src_vocab_size == tgt_vocab_size:
                encoder.embedding.weight = decoder.embedding.weight
        model.initialize(config.init_range)
        return model

    def initialize(self, init_range: float) -> None:
        """Uniform(-r, r) initialisation of every parameter (OpenNMT's default).

        Measured on Multi30k, this is worth about 10 BLEU over Xavier at a
        20-minute budget. Padding embeddings stay zero; the
        cosine attention's scale keeps its initial value.
        """
        for name, parameter in self.named_parameters():
            if name.endswith("log_scale"):
                continue
            nn.init.uniform_(parameter, -init_range, init_range)
        with torch.no_grad():
            self.encoder.embedding.weight[PAD_ID].zero_()
            self.decoder.embedding.weight[PAD_ID].zero_()

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[EncoderMemory, DecoderState]:
        """Run the encoder and prepare what the decoder needs: memory and initial state."""
        encoder_outputs, final = self.encoder(src, src_lengths)  # (B, S, H)
        src_mask = src != PAD_ID  # (B, S), True on real tokens
        return self.decoder.prepare_memory(encoder_outputs, src_mask), self.decoder.initial_state(final)

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        """The fully connected layer to the vocabulary: decoder outputs (..., H) -> logits (..., V)."""
        if self.output_projection is not None:
            outputs = self.output_projection(outputs)  # (..., E)
        return self.output_layer(outputs)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) for every target position under teacher forcing."""
        memory, state = self.encode(src, src_lengths)
        decoded = self.decoder(tgt_in, state, memory)  # outputs: (B, T, H)
        return self.logits(decoded.outputs)

    def step(
        self, prev_tokens: torch.Tensor, state: DecoderState, memory: EncoderMemory
    ) -> tuple[torch.Tensor, DecoderState, DecoderOutput]:
        """One decoding step: log-probabilities (B, V) of the next word, new state, details."""
        decoded, state = self.decoder.step(prev_tokens, state, memory)
        logits = self.logits(decoded.outputs.squeeze(1)).float()  # (B, V)
        return torch.log_softmax(logits, dim=-1), state, decoded

    @property
    def attention_name(self) -> str:
        attention = self.decoder.attention
        return attention.name if attention is not None else "none"
