"""Special token ids, the same in every vocabulary attnmt builds.

They belong to the vocabulary, not to the model: the tokenizer reserves them when
it trains a sentencepiece model, the data pipeline pads and frames sentences with
them, and the model and search only read them.
"""

from __future__ import annotations

#: Padding (never a real token), unknown piece, start of target (<s>), end of sentence (</s>).
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

#: How the special tokens are written when shown to people.
SPECIAL_PIECES = {PAD_ID: "<pad>", UNK_ID: "<unk>", BOS_ID: "<s>", EOS_ID: "</s>"}
