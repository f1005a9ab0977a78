"""The encoder: padding never changes outputs or final states."""

from __future__ import annotations

import pytest
import torch

from attnmt.data import pad
from attnmt.encoder import Encoder, reverse_within_length


def test_reverse_within_length_is_its_own_inverse() -> None:
    index = reverse_within_length(torch.tensor([3, 5, 1]), 5)
    assert index.tolist() == [[2, 1, 0, 3, 4], [4, 3, 2, 1, 0], [0, 1, 2, 3, 4]]
    assert torch.equal(index.gather(1, index), torch.arange(5).expand(3, 5))


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_padding_never_changes_a_result(rnn: str, bidirectional: bool, layers: int) -> None:
    torch.manual_seed(0)
    encoder = Encoder(20, 8, 12, layers, rnn, bidirectional, dropout=0.0, pad_id=0).eval()
    sentences = [[5, 6, 7, 3], [8, 9, 10, 11, 12, 13, 3], [4, 3]]
    src, lengths = pad(sentences)
    outputs, final = encoder(src, lengths)
    hidden = final[0] if isinstance(final, tuple) else final
    for row, sentence in enumerate(sentences):
        alone, alone_lengths = pad([sentence])
        alone_outputs, alone_final = encoder(alone, alone_lengths)
        alone_hidden = alone_final[0] if isinstance(alone_final, tuple) else alone_final
        n = len(sentence)
        assert torch.allclose(outputs[row, :n], alone_outputs[0], atol=1e-6)
        assert torch.all(outputs[row, n:] == 0)
        assert torch.allclose(hidden[:, row], alone_hidden[:, 0], atol=1e-6)


def test_bidirectional_final_state_matches_torch_rnn() -> None:
    """The hand-made bidirectional layer equals torch's own on an unpadded sentence."""
    torch.manual_seed(0)
    encoder = Encoder(20, 8, 12, 1, "gru", True, dropout=0.0, pad_id=0).eval()
    reference = torch.nn.GRU(8, 6, batch_first=True, bidirectional=True)
    forward, backward = encoder.layers[0]
    with torch.no_grad():
        for name, value in forward.named_parameters():
            getattr(reference, name).copy_(value)
        for name, value in backward.named_parameters():
            getattr(reference, name + "_reverse").copy_(value)
    src = torch.tensor([[5, 6, 7, 8, 3]])
    outputs, final = encoder(src, torch.tensor([5]))
    ref_out, ref_final = reference(encoder.embedding(src))
    assert torch.allclose(outputs, ref_out, atol=1e-6)
    assert torch.allclose(final[0], torch.cat([ref_final[0], ref_final[1]], dim=-1)[0], atol=1e-6)
