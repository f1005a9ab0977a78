"""Subword tokenization with sentencepiece, trained at train time, stored with the model.

One model for both languages (``joint_vocab``) or one per side. Byte fallback
makes any Unicode text representable: a character never seen in training becomes
its UTF-8 bytes instead of <unk>. Ids 0-3 are <pad>, <unk>, <s>, </s> in every
model (see ``vocab.py``).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import sentencepiece as spm

from attnmt.errors import ModelDirError
from attnmt.files import atomic_output
from attnmt.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

SRC_MODEL, TGT_MODEL, JOINT_MODEL = "spm.src.model", "spm.tgt.model", "spm.joint.model"
#: The target vocabulary of a joint model: the pieces that occur on the target side (JSON list of piece ids).
TARGET_VOCAB = "target_vocab.json"
TOKENIZER_FILES = (JOINT_MODEL, SRC_MODEL, TGT_MODEL, TARGET_VOCAB)


def train_sentencepiece(sentences: list[str], vocab_size: int, model_type: str, seed: int) -> bytes:
    """Train a sentencepiece model on ``sentences`` and return it serialised."""
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(s for s in sentences if s),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        byte_fallback=True,
        hard_vocab_limit=False,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        input_sentence_size=2_000_000,
        shuffle_input_sentence=True,
        num_threads=2,
        minloglevel=2,
    )
    return model.getvalue()


def _processor(path: Path) -> spm.SentencePieceProcessor:
    """A sentencepiece model that loads and reserves attnmt's special ids, or ModelDirError."""
    try:
        processor = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError, ValueError):
        raise ModelDirError(f"{path}: not a readable sentencepiece model (damaged or foreign file)") from None
    specials = [processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id()]
    if specials != [PAD_ID, UNK_ID, BOS_ID, EOS_ID]:
        raise ModelDirError(f"{path}: a sentencepiece model not trained by attnmt (special ids {specials})")
    return processor


def tokenizer_fingerprint(model_dir: Path) -> dict[str, str]:
    """SHA-256 of each sentencepiece model file in ``model_dir`` (stored in checkpoints, checked on load)."""
    return {
        name: hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
        for name in TOKENIZER_FILES
        if (model_dir / name).is_file()
    }


#: The target vocabulary is rounded up to a multiple of this: matrix kernels run much faster on such sizes
#: (measured on an AVX2 CPU: an output layer of 5,376 pieces took 264 ms per update, of 5,315 pieces 376 ms).
VOCAB_MULTIPLE = 64


def used_target_pieces(processor: spm.SentencePieceProcessor, targets: list[str]) -> list[int]:
    """The special ids, then every piece id the target side uses, in sentencepiece order.

    The list is filled up to a multiple of ``VOCAB_MULTIPLE`` with the first pieces
    the target side does not use: real pieces the model learns never to produce.
    """
    specials = [PAD_ID, UNK_ID, BOS_ID, EOS_ID]
    used = {piece for ids in processor.encode(targets) for piece in ids} - set(specials)
    filler = (i for i in range(processor.get_piece_size()) if i not in used and i not in specials)
    while (len(used) + len(specials)) % VOCAB_MULTIPLE and len(used) + len(specials) < processor.get_piece_size():
        used.add(next(filler))
    return [*specials, *sorted(used)]


def _target_ids(data: bytes, processor: spm.SentencePieceProcessor, name: str) -> list[int]:
    """A stored target vocabulary, checked: special ids first, distinct pieces of ``processor``."""
    try:
        ids = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        ids = None
    size = processor.get_piece_size()
    if (
        not isinstance(ids, list)
        or ids[:4] != [PAD_ID, UNK_ID, BOS_ID, EOS_ID]
        or not all(isinstance(i, int) and 0 <= i < size for i in ids)
        or len(set(ids)) != len(ids)
    ):
        raise ModelDirError(f"{name}: not a target vocabulary of this sentencepiece model")
    return ids


class Tokenizer:
    """Source and target sentencepiece processors (the same object when joint).

    With a joint model the target side may use only the pieces that occur in
    target training text (``data.target_vocab: used``, as OpenNMT-py builds its
    target vocabulary): the model's target ids are then positions in
    ``target_ids``, which maps them to sentencepiece ids, and the output layer is
    that much smaller. Encoding a target piece outside it gives <unk>.
    """

    def __init__(
        self, src: spm.SentencePieceProcessor, tgt: spm.SentencePieceProcessor, target_ids: list[int] | None = None
    ) -> None:
        self.src = src
        self.tgt = tgt
        self.target_ids = target_ids
        self._compact = {piece: index for index, piece in enumerate(target_ids)} if target_ids else None

    @classmethod
    def train(
        cls,
        pairs: list[tuple[str, str]],
        out_dir: Path,
        vocab_size: int,
        model_type: str,
        joint: bool,
        seed: int = 1,
        target_vocab: str = "all",
    ) -> Tokenizer:
        """Train on the training pairs, save the model file(s) in ``out_dir``, load them.

        The result depends only on the pairs and these settings (the seed is fixed,
        not the run's ``training.seed``), so runs that differ only in training
        settings share a tokenizer and can form an ensemble.
        """
        if joint:
            models = {JOINT_MODEL: train_sentencepiece([s for p in pairs for s in p], vocab_size, model_type, seed)}
        else:
            models = {
                SRC_MODEL: train_sentencepiece([p[0] for p in pairs], vocab_size, model_type, seed),
                TGT_MODEL: train_sentencepiece([p[1] for p in pairs], vocab_size, model_type, seed),
            }
        if joint and target_vocab == "used":
            processor = spm.SentencePieceProcessor()
            processor.LoadFromSerializedProto(models[JOINT_MODEL])
            models[TARGET_VOCAB] = json.dumps(used_target_pieces(processor, [p[1] for p in pairs])).encode()
        for name, model in models.items():
            with atomic_output(out_dir / name, binary=True) as stream:
                stream.write(model)
        return cls.load(out_dir)

    @classmethod
    def load(cls, model_dir: Path) -> Tokenizer:
        """Load the tokenizer stored in a model directory; a damaged file is a ModelDirError."""
        if (model_dir / JOINT_MODEL).is_file():
            joint = _processor(model_dir / JOINT_MODEL)
            vocab = model_dir / TARGET_VOCAB
            target_ids = _target_ids(vocab.read_bytes(), joint, str(vocab)) if vocab.is_file() else None
            return cls(joint, joint, target_ids)
        if (model_dir / SRC_MODEL).is_file() and (model_dir / TGT_MODEL).is_file():
            return cls(_processor(model_dir / SRC_MODEL), _processor(model_dir / TGT_MODEL))
        raise ModelDirError(f"{model_dir}: no sentencepiece model ({JOINT_MODEL}, or {SRC_MODEL} and {TGT_MODEL})")

    def model_files(self, model_dir: Path) -> dict[str, bytes]:
        """The serialised sentencepiece model(s) stored in ``model_dir``, by file name."""
        return {name: (model_dir / name).read_bytes() for name in tokenizer_fingerprint(model_dir)}

    @classmethod
    def from_model_files(cls, files: dict[str, bytes]) -> Tokenizer:
        """A tokenizer from serialised models (as ``model_files`` gives them), without touching the disk."""
        loaded = {}
        for name, data in files.items():
            if name == TARGET_VOCAB:
                continue
            processor = spm.SentencePieceProcessor()
            processor.LoadFromSerializedProto(data)
            loaded[name] = processor
        if JOINT_MODEL in loaded:
            joint = loaded[JOINT_MODEL]
            target_ids = _target_ids(files[TARGET_VOCAB], joint, TARGET_VOCAB) if TARGET_VOCAB in files else None
            return cls(joint, joint, target_ids)
        return cls(loaded[SRC_MODEL], loaded[TGT_MODEL])

    @staticmethod
    def exists(model_dir: Path) -> bool:
        return (model_dir / JOINT_MODEL).is_file() or (model_dir / SRC_MODEL).is_file()

    def encode_src(self, texts: list[str]) -> list[list[int]]:
        """Source ids, each ending in </s> so that even an empty line has one token."""
        return [ids + [EOS_ID] for ids in self.src.encode(texts)]

    def encode_tgt(self, texts: list[str]) -> list[list[int]]:
        """Target ids without <s> or </s> (the batching adds them)."""
        encoded = list(self.tgt.encode(texts))
        if self._compact is None:
            return encoded
        compact = self._compact
        return [[compact.get(piece, UNK_ID) for piece in ids] for ids in encoded]

    def _pieces_of(self, ids: list[int]) -> list[int]:
        return ids if self.target_ids is None else [self.target_ids[i] for i in ids]

    def decode_tgt(self, ids: list[int]) -> str:
        """Detokenised target text."""
        return str(self.tgt.decode(self._pieces_of(ids)))

    def src_pieces(self, ids: list[int]) -> list[str]:
        return [str(self.src.id_to_piece(i)) for i in ids]

    def tgt_pieces(self, ids: list[int]) -> list[str]:
        return [str(self.tgt.id_to_piece(i)) for i in self._pieces_of(ids)]

    def tgt_piece(self, index: int) -> str:
        return self.tgt_pieces([index])[0]

    @property
    def src_vocab_size(self) -> int:
        return int(self.src.get_piece_size())

    @property
    def tgt_vocab_size(self) -> int:
        return len(self.target_ids) if self.target_ids is not None else int(self.tgt.get_piece_size())
