"""The worked example of attention, for any sentence and any trained model.

The lecture computes one decoding step by hand: the decoder's output (the query)
is compared with each encoder output by a similarity score, softmax turns the
scores into weights, the weighted sum of encoder outputs is the context vector
("attention values"), and a fully connected layer plus softmax picks the next
word. ``explain`` records every one of those numbers for every step, reading
them from ``Seq2Seq.step`` — the very code path that translates — so they are
checkable: ``weights == softmax(scores)``, ``context == sum_s weights_s *
encoder_outputs_s`` and (greedy) ``chosen == argmax(probabilities)``.

Decoding is greedy by default; with ``reference`` the given target is forced
(teacher forcing) and the probability of each reference word is shown; with
``beam`` the best beam hypothesis is found first, then replayed step by step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from attnmt import limits
from attnmt.data import pad
from attnmt.decoder import EncoderMemory
from attnmt.errors import InputError
from attnmt.local_attention import window_bounds
from attnmt.model import Seq2Seq
from attnmt.products import onednn_products
from attnmt.search import DecodingOptions, max_output_lengths, search
from attnmt.translator import Translator, check_texts
from attnmt.vocab import BOS_ID, EOS_ID

NO_ATTENTION_NOTE = (
    "this model has no attention (attention: none): the decoder sees the source only through the "
    "encoder's final state, so there are no scores, weights or context vectors to show"
)


def _floats(tensor: torch.Tensor) -> list[float]:
    return [float(x) for x in tensor.reshape(-1).tolist()]


def _forced_tokens(
    translator: Translator, src_ids: list[int], reference: str | None, options: DecodingOptions
) -> list[int] | None:
    """The target to replay: the reference, the best beam hypothesis, or None for greedy."""
    if reference is not None:
        return translator.tokenizer.encode_tgt([reference])[0] + [EOS_ID]
    if options.beam > 1 or len(translator.models) > 1:
        best = search(translator.model, [src_ids], options, translator.device, packed=translator.packed_weights())[0][0]
        return best.tokens + [EOS_ID]
    return None


def _span_details(model: Seq2Seq, aligned: torch.Tensor | None, length: int) -> dict[str, Any]:
    """Local attention's aligned position p_t, its window and (local-p) the Gaussian of each position."""
    if aligned is None:
        return {}
    span = model.decoder.span
    half_width = int(getattr(span, "half_width"))  # noqa: B009 (spans differ in type)
    position = float(aligned[0, 0])
    details: dict[str, Any] = {
        "aligned_position": position,
        "window": list(window_bounds(position, half_width, length)),
    }
    if span.name == "local-p":
        sigma = half_width / 2
        details["gaussian"] = [math.exp(-((s - position) ** 2) / (2 * sigma**2)) for s in range(length)]
    return details


@torch.no_grad()
def trace(
    model: Seq2Seq,
    src_ids: list[int],
    tgt_piece: Callable[[int], str],
    forced: list[int] | None,
    limit: int,
    top_k: int,
    device: torch.device,
) -> tuple[EncoderMemory, list[dict[str, Any]], list[int]]:
    """Decode ``src_ids`` one ``Seq2Seq.step`` at a time and record every number.

    ``forced`` replays a given target (ending in </s>); otherwise each step takes
    the most probable word and </s> is forced at ``limit`` steps, as in search.py.
    Each step's dict holds the JSON fields of PRODUCT.md plus ``output`` (the
    vector the fully connected output layer reads) and ``probs`` (a tensor).
    """
    model.eval()
    src, lengths = pad([src_ids])
    src, lengths = src.to(device), lengths.to(device)
    memory, state = model.encode(src, lengths)
    steps: list[dict[str, Any]] = []
    prev, output_ids = BOS_ID, []
    for t in range(len(forced) if forced is not None else limit):
        log_probs, state, details = model.step(torch.tensor([prev], device=device), state, memory)
        probs = log_probs[0].exp()
        top = probs.topk(min(top_k, probs.numel()))
        at_limit = forced is None and t == limit - 1 and int(probs.argmax()) != EOS_ID
        if forced is not None:
            chosen = forced[t]
        elif at_limit:
            chosen = EOS_ID  # the maximum output length forces </s>, as in search.py
        else:
            chosen = int(probs.argmax())
        step: dict[str, Any] = {
            "step": t + 1,
            "input_token": tgt_piece(prev),
            "query": _floats(details.queries[0, 0]),
            "top_k": [{"token": tgt_piece(int(i)), "prob": float(p)} for p, i in zip(top.values, top.indices)],
            "chosen": tgt_piece(chosen),
            "chosen_prob": float(probs[chosen]),
            "forced_eos_at_max_length": at_limit,
            "output": _floats(details.outputs[0, 0]),
            "probs": probs,
        }
        if details.attention is not None:
            step.update(
                scores=[s if math.isfinite(s) else None for s in _floats(details.attention.scores[0, 0])],
                weights=_floats(details.attention.weights[0, 0]),
                context=_floats(details.attention.context[0, 0]),
                **_span_details(model, details.attention.aligned, len(src_ids)),
            )
        steps.append(step)
        if chosen == EOS_ID:
            break
        output_ids.append(chosen)
        prev = chosen
    return memory, steps, output_ids


def explain(
    translator: Translator,
    sentence: str,
    reference: str | None = None,
    beam: int = 1,
    top_k: int = 5,
) -> dict[str, Any]:
    """Every number of every decoding step of ``sentence`` (the JSON of ``attnmt explain``)."""
    tokenizer = translator.tokenizer
    check_texts([sentence] if reference is None else [sentence, reference])
    if not sentence.strip():
        raise InputError("text", "explain needs a non-empty sentence")
    if not 1 <= top_k <= limits.MAX_TOP_K:
        raise InputError("top_k", f"must be an integer from 1 to {limits.MAX_TOP_K}, got {top_k}")
    options = translator.options(beam=beam)
    src_ids = tokenizer.encode_src([sentence.strip()])[0]
    forced = _forced_tokens(translator, src_ids, reference, options)
    lengths = torch.tensor([len(src_ids)])
    limit = int(max_output_lengths(lengths, options.max_length_ratio, options.max_length_extra)[0])
    with onednn_products(options.onednn, translator.packed_weights()):  # the products translate uses
        memory, steps, output_ids = trace(
            translator.models[0], src_ids, tokenizer.tgt_piece, forced, limit, top_k, translator.device
        )
    for step in steps:
        del step["probs"]
    result: dict[str, Any] = {
        "model": translator.name,
        "scoring": translator.model.attention_name,
        "span": translator.config.model.attention_span,
        "decoder": translator.config.model.decoder,
        "input_feeding": translator.config.model.input_feeding,
        "mode": "reference" if reference is not None else (f"beam {beam}" if beam > 1 else "greedy"),
        "source": sentence,
        "source_tokens": tokenizer.src_pieces(src_ids),
        "encoder_outputs": [_floats(row) for row in memory.encoder_outputs[0]],
        "steps": steps,
        "translation": tokenizer.decode_tgt(output_ids),
    }
    if reference is not None:
        result["reference"] = reference
        result["reference_log_prob"] = sum(math.log(max(s["chosen_prob"], 1e-45)) for s in steps)
    if len(translator.models) > 1:
        result["ensemble"] = len(translator.models)
        result["ensemble_note"] = (
            f"an ensemble of {len(translator.models)} models chose the translation; the numbers shown are the "
            "first model's, replayed on it"
        )
    if translator.model.attention_name == "none":
        result["note"] = NO_ATTENTION_NOTE
    return result


def alignment(explanation: dict[str, Any]) -> list[tuple[str, str, float]]:
    """For each output token, the source token with the largest weight (and that weight)."""
    rows = []
    for step in explanation["steps"]:
        if "weights" not in step:
            continue
        best = max(range(len(step["weights"])), key=lambda s: step["weights"][s])
        rows.append((step["chosen"], explanation["source_tokens"][best], step["weights"][best]))
    return rows


def _vector(values: list[float], full: bool, shown: int = 6) -> str:
    norm = math.sqrt(sum(v * v for v in values))
    body = values if full else values[:shown]
    more = "" if full or len(values) <= shown else f", ... ({len(values)} values)"
    return f"|v| = {norm:.3f}  [" + ", ".join(f"{v:+.3f}" for v in body) + more + "]"


def _attention_lines(explanation: dict[str, Any], step: dict[str, Any], width: int, full: bool) -> list[str]:
    """One step's scores and weights per source token (with local attention: p_t, window, Gaussian)."""
    lines = []
    if "aligned_position" in step:
        low, high = step["window"]
        lines.append(
            f"  {explanation['span']} attention: aligned position p_t = {step['aligned_position']:.2f}, "
            f"window = source positions {low}..{high}"
        )
    gaussian = step.get("gaussian")
    header = f"  {'source token':<{width}} {explanation['scoring'] + ' score':>14}"
    lines.append(header + ("  gaussian" if gaussian else "") + "  weight")
    for index, (token, score, weight) in enumerate(zip(explanation["source_tokens"], step["scores"], step["weights"])):
        shown = f"{score:>14.3f}" if score is not None else f"{'outside':>14}"
        extra = f"  {gaussian[index]:8.3f}" if gaussian else ""
        bar = "█" * round(weight * 20)
        lines.append(f"  {token:<{width}} {shown}{extra}  {weight * 100:5.1f}% {bar}".rstrip())
    lines.append(f"  attention values (context) {_vector(step['context'], full)}")
    return lines


def format_text(explanation: dict[str, Any], full: bool = False) -> str:
    """The readable table of ``attnmt explain --format text``."""
    lines = [
        f"source:      {explanation['source']}",
        f"tokens:      {' '.join(explanation['source_tokens'])}",
        f"model:       {explanation['decoder']} decoder, {explanation['scoring']} attention"
        + (f" ({explanation['span']})" if explanation.get("span", "global") != "global" else "")
        + (", input feeding" if explanation.get("input_feeding") else "")
        + f"; decoding: {explanation['mode']}",
        f"translation: {explanation['translation']}",
    ]
    if "reference" in explanation:
        lines.append(f"log P(reference | source) = {explanation['reference_log_prob']:.3f}")
    for key in ("note", "ensemble_note"):
        if key in explanation:
            lines += ["", f"note: {explanation[key]}"]
    source_width = max(len(t) for t in explanation["source_tokens"]) + 2
    for step in explanation["steps"]:
        lines += [
            "",
            f"step {step['step']}: previous word fed in: {step['input_token']}",
            f"  decoder query {_vector(step['query'], full)}",
        ]
        if "weights" in step:
            lines += _attention_lines(explanation, step, source_width, full)
        top = ", ".join(f"{c['token']} {c['prob'] * 100:.1f}%" for c in step["top_k"])
        lines.append(f"  next word, top {len(step['top_k'])}: {top}")
        forced = "  [forced: maximum output length reached]" if step.get("forced_eos_at_max_length") else ""
        label = "reference word" if explanation["mode"] == "reference" else "chosen"
        lines.append(f"  {label}: {step['chosen']} ({step['chosen_prob'] * 100:.1f}%){forced}")
    summary = alignment(explanation)
    if summary:
        lines += ["", "alignment (each output token -> the source token it attended to most):"]
        lines += [f"  {out:<16} <- {src:<16} {weight * 100:5.1f}%" for out, src, weight in summary]
    return "\n".join(lines)
