"""Decoders: fast paths equal step-by-step decoding; every combination learns a toy task."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from attnmt.data import make_batch
from attnmt.device import autocast
from conftest import exact_match, reversal_pairs, toy_model, train_toy

ATTENTIONS = ["dot", "cosine", "general", "concat", "location", "none"]
COMBINATIONS = (
    [("luong", attention, False) for attention in ATTENTIONS]
    + [("luong", attention, True) for attention in ["dot", "general", "concat"]]
    + [("bahdanau", attention, False) for attention in ATTENTIONS]
)


SPANS = [
    (decoder, attention, input_feeding, span)
    for span in ("local-m", "local-p")
    for decoder, attention, input_feeding in [
        ("luong", "general", False),
        ("luong", "dot", True),
        ("bahdanau", "concat", False),
    ]
]


@pytest.mark.parametrize(
    "decoder,attention,input_feeding,span",
    [(*combination, "global") for combination in COMBINATIONS] + SPANS + [("luong", "general", False, "tied")],
)
def test_teacher_forcing_equals_step_by_step(decoder: str, attention: str, input_feeding: bool, span: str) -> None:
    """The batched whole-sequence forward gives the logits of one step at a time."""
    torch.manual_seed(0)
    settings: dict = {"attention_span": span, "local_window": 2} if span.startswith("local") else {}
    if span == "tied":
        settings = {"tie_embeddings": True}
    model = toy_model(
        decoder=decoder, attention=attention, input_feeding=input_feeding, bidirectional=True, **settings
    ).eval()
    pairs = reversal_pairs(5, 2, 6, seed=0)
    batch = make_batch([p[0] for p in pairs], [p[1] for p in pairs])
    logits = model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, V)
    memory, state = model.encode(batch.src, batch.src_lengths)
    for t in range(batch.tgt_in.size(1)):
        log_probs, state, _ = model.step(batch.tgt_in[:, t], state, memory)
        assert torch.allclose(log_probs, torch.log_softmax(logits[:, t], -1), atol=1e-5)


@pytest.mark.parametrize("decoder,attention,input_feeding", COMBINATIONS)
def test_every_combination_learns_to_reverse(decoder: str, attention: str, input_feeding: bool) -> None:
    """Reversing digits: >= 95 % exact match on unseen sequences after a short run.

    Attention models reverse 2-7 digits. The plain encoder-decoder gets the short
    phrases the lecture says it handles ("Let's go": 2-3 words); how it fails on
    long inputs is the next test. Training stops at 500 updates, or earlier once
    99 % of a validation set comes out right; the test set is scored only at the end.
    """
    longest = 3 if attention == "none" else 7
    torch.manual_seed(0)
    model = toy_model(decoder=decoder, attention=attention, input_feeding=input_feeding, bidirectional=True)
    valid = reversal_pairs(300, 2, longest, seed=7)
    train_toy(model, reversal_pairs(4000, 2, longest, seed=1), steps=500, until=lambda m: exact_match(m, valid) >= 0.99)
    assert exact_match(model, reversal_pairs(300, 2, longest, seed=99)) >= 0.95


def test_attention_beats_the_plain_encoder_decoder_on_long_sequences() -> None:
    """The lecture's point: one context vector loses long inputs, attention does not."""
    train = reversal_pairs(6000, 14, 18, seed=1)
    test = reversal_pairs(200, 14, 18, seed=99)
    scores = {}
    for attention in ["none", "dot"]:
        torch.manual_seed(0)
        model = toy_model(attention=attention, bidirectional=True)
        train_toy(model, train, steps=300)
        scores[attention] = exact_match(model, test)
    assert scores["dot"] >= 0.8
    assert scores["dot"] > scores["none"] + 0.3


@pytest.mark.parametrize("decoder,input_feeding", [("luong", False), ("luong", True), ("bahdanau", False)])
def test_state_counts_steps_and_survives_reordering(decoder: str, input_feeding: bool) -> None:
    torch.manual_seed(0)
    model = toy_model(decoder=decoder, input_feeding=input_feeding).eval()
    batch = make_batch([p[0] for p in reversal_pairs(3, 2, 5, seed=1)], [[4], [5], [6]])
    memory, state = model.encode(batch.src, batch.src_lengths)
    assert state.step == 0
    assert torch.equal(memory.keys, model.decoder.attention.project_keys(memory.encoder_outputs))
    for t in range(3):
        _, state, _ = model.step(batch.tgt_in[:, 0], state, memory)
        assert state.step == t + 1
    assert state.reorder(torch.tensor([2, 0])).step == 3


@pytest.mark.parametrize(
    "span,task",
    [("local-m", "copy"), ("local-p", "reverse")],
)
def test_local_attention_learns(span: str, task: str) -> None:
    """local-m's p_t = t fits a monotonic task (copying); local-p learns where to look (reversing)."""
    torch.manual_seed(0)
    model = toy_model(attention="general", attention_span=span, local_window=2, bidirectional=True)
    pairs = reversal_pairs(4000, 2, 7, seed=1)
    if task == "copy":
        pairs = [(source, source[:-1]) for source, _ in pairs]
    valid, test = reversal_pairs(300, 2, 7, seed=7), reversal_pairs(300, 2, 7, seed=99)
    if task == "copy":
        valid, test = ([(source, source[:-1]) for source, _ in held_out] for held_out in (valid, test))
    train_toy(model, pairs, steps=500, until=lambda m: exact_match(m, valid) >= 0.99)
    assert exact_match(model, test) >= 0.95


@pytest.mark.parametrize(
    "decoder,attention,input_feeding,span",
    [(*combination, "global") for combination in COMBINATIONS] + SPANS,
)
@pytest.mark.parametrize("rnn,layers", [("lstm", 1), ("gru", 2)])
def test_beams_share_their_sentence_memory(
    decoder: str, attention: str, input_feeding: bool, span: str, rnn: str, layers: int
) -> None:
    """K hypotheses reading one shared memory row step exactly like K copies of it, also after rows are dropped."""
    torch.manual_seed(0)
    settings: dict = {"attention_span": span, "local_window": 2} if span.startswith("local") else {}
    model = toy_model(
        decoder=decoder,
        attention=attention,
        input_feeding=input_feeding,
        bidirectional=True,
        rnn=rnn,
        layers=layers,
        **settings,
    ).eval()
    beams = 3
    batch = make_batch([p[0] for p in reversal_pairs(4, 2, 7, seed=3)], [[4]] * 4)
    memory, state = model.encode(batch.src, batch.src_lengths)
    expand = torch.arange(4).repeat_interleave(beams)
    shared, copied, state = memory.for_beams(beams), memory.reorder(expand), state.reorder(expand)
    assert shared.beams == (1 if span == "local-m" else beams)  # local-m's window follows the step: copies
    shared_state, copied_state = state, state
    for t in range(4):
        if t == 2:  # drop sentence 1, keep the others' blocks of K rows in order
            rows = torch.tensor([0, 1, 2, 6, 7, 8, 9, 10, 11])
            shared, copied = shared.reorder(rows), copied.reorder(rows)
            shared_state, copied_state = shared_state.reorder(rows), copied_state.reorder(rows)
        prev = torch.randint(4, 14, (9 if t >= 2 else 12,))
        log_probs, shared_state, shared_out = model.step(prev, shared_state, shared)
        expected, copied_state, copied_out = model.step(prev, copied_state, copied)
        assert torch.allclose(log_probs, expected, atol=1e-5)
        if attention != "none":
            assert torch.allclose(shared_out.attention.weights, copied_out.attention.weights, atol=1e-6)
            assert shared_out.attention.weights.shape == copied_out.attention.weights.shape
            if span != "global":
                assert torch.allclose(shared_out.attention.aligned, copied_out.attention.aligned, atol=1e-5)


def _bf16_copies(
    model: torch.nn.Module, sources: list[list[int]], targets: list[list[int]], shapes: Callable[[torch.Size], bool]
) -> int:
    """How many bf16 tensors of the wanted ``shapes`` one bf16 forward keeps for backward."""
    batch = make_batch(sources, targets)
    copies: set[int] = set()

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dtype == torch.bfloat16 and shapes(tensor.shape):
            copies.add(tensor.untyped_storage().data_ptr())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        with autocast(torch.device("cpu"), torch.bfloat16):
            model(batch.src, batch.src_lengths, batch.tgt_in).float().sum().backward()
    return len(copies)


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
@pytest.mark.parametrize("decoder,attention,input_feeding", [c for c in COMBINATIONS if c[1] != "none"])
def test_bf16_steps_keep_one_copy_of_the_encoder_memory(
    decoder: str, attention: str, input_feeding: bool, rnn: str
) -> None:
    """Under bf16 autocast the steps share one bf16 copy of the values and keys: 3 or 11 target steps keep as many.

    (A GRU's outputs are fp32, and autocast alone would cast them at every step.)
    """
    torch.manual_seed(0)
    model = toy_model(decoder=decoder, attention=attention, input_feeding=input_feeding, bidirectional=True, rnn=rnn)
    pairs = reversal_pairs(6, 9, 10, seed=0)
    sources = [p[0][:-1] + p[0] for p in pairs]  # longer than the targets, so (B, T, ...) never looks like (B, S, ...)
    source_shape = make_batch(sources, [p[1] for p in pairs]).src.shape

    def like_the_source(shape: torch.Size) -> bool:  # (B, S, ...)
        return tuple(shape[:2]) == tuple(source_shape)

    short = _bf16_copies(model, sources, [p[1][:2] for p in pairs], like_the_source)
    assert _bf16_copies(model, sources, [p[1] for p in pairs], like_the_source) == short


STEPWISE = [(d, a, f, "global") for d, a, f in COMBINATIONS if d == "bahdanau" or f] + [
    ("luong", "general", True, "local-p"),
    ("bahdanau", "concat", False, "local-p"),
]


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
@pytest.mark.parametrize("decoder,attention,input_feeding,span", STEPWISE)
def test_bf16_steps_keep_one_copy_of_the_step_weights(
    decoder: str, attention: str, input_feeding: bool, span: str, rnn: str
) -> None:
    """Decoders that run step by step read one bf16 copy of their RNN's, W_c's or W_o's, attention's and
    local-p's weights per batch (``EncoderMemory.step_parameters``): 3 or 11 target steps keep as many.

    Without it autocast would cast each weight at every step and keep every copy for backward.
    """
    torch.manual_seed(0)
    model = toy_model(decoder=decoder, attention=attention, input_feeding=input_feeding, rnn=rnn, attention_span=span)
    elsewhere = [*model.encoder.parameters(), model.decoder.embedding.weight, *model.output_layer.parameters()]
    others = {shape for p in elsewhere for shape in (tuple(p.shape), tuple(p.shape[::-1]))}
    step_weights = {
        shape
        for p in model.decoder.parameters()
        if p.dim() == 2
        for shape in (tuple(p.shape), tuple(p.shape[::-1]))
        if shape not in others
    }
    assert step_weights  # the RNN's at least
    pairs = reversal_pairs(6, 9, 10, seed=0)

    def a_step_weight(shape: torch.Size) -> bool:
        return tuple(shape) in step_weights

    short = _bf16_copies(model, [p[0] for p in pairs], [p[1][:2] for p in pairs], a_step_weight)
    assert short >= 1
    assert _bf16_copies(model, [p[0] for p in pairs], [p[1] for p in pairs], a_step_weight) == short
