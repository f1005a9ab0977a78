"""The whole model: tied embeddings share one matrix, through training and a checkpoint round trip."""

from __future__ import annotations

import io

import pytest
import torch

from attnmt.data import make_batch
from attnmt.model import Seq2Seq
from conftest import TOY_VOCAB, reversal_pairs, toy_model


@pytest.mark.parametrize("embedding_size", [32, 64])
def test_tied_embeddings_are_one_matrix(embedding_size: int) -> None:
    model = toy_model(tie_embeddings=True, embedding_size=embedding_size, hidden_size=64)
    shared = model.decoder.embedding.weight
    assert model.output_layer.weight is shared and model.encoder.embedding.weight is shared
    assert (model.output_projection is None) == (embedding_size == 64)
    untied = toy_model(embedding_size=embedding_size, hidden_size=64)
    projection = 64 * embedding_size if embedding_size != 64 else 0
    saved = TOY_VOCAB * embedding_size + 64 * TOY_VOCAB - projection  # a source embedding and an output matrix
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in model.parameters()) == saved
    assert torch.all(shared[0] == 0)  # padding row


def test_tied_model_trains_and_survives_a_checkpoint_round_trip() -> None:
    torch.manual_seed(0)
    model = toy_model(tie_embeddings=True, embedding_size=32)
    pairs = reversal_pairs(8, 2, 5, seed=0)
    batch = make_batch([p[0] for p in pairs], [p[1] for p in pairs])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(
            model(batch.src, batch.src_lengths, batch.tgt_in).flatten(0, 1), batch.tgt_out.flatten()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.output_layer.weight is model.decoder.embedding.weight
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = toy_model(tie_embeddings=True, embedding_size=32)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.output_layer.weight is restored.decoder.embedding.weight
    model.eval(), restored.eval()
    assert torch.equal(
        model(batch.src, batch.src_lengths, batch.tgt_in), restored(batch.src, batch.src_lengths, batch.tgt_in)
    )


def test_separate_vocabularies_tie_only_the_target_side() -> None:
    from attnmt.config import config_from_dict

    config = config_from_dict({"model": {"embedding_size": 16, "hidden_size": 32, "tie_embeddings": True}}).model
    model = Seq2Seq.from_config(config, TOY_VOCAB + 5, TOY_VOCAB, max_source_length=10)
    assert model.output_layer.weight is model.decoder.embedding.weight
    assert model.encoder.embedding.weight is not model.decoder.embedding.weight
