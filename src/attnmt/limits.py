"""Documented limits on what one request may ask for, checked before any work starts.

A 1 MB input line or a beam of 10,000 would otherwise run for minutes and take
gigabytes. Every front end (Python API, ``attnmt translate``/``evaluate``/
``explain``, the HTTP server) checks these through ``DecodingOptions.check`` and
``Translator``; going past one is a user error naming the option or the line.
"""

from __future__ import annotations

#: Characters in one input sentence (about 400 words of English).
MAX_INPUT_CHARS = 2000
#: Beam size.
MAX_BEAM = 64
#: Sentences decoded together.
MAX_BATCH_SIZE = 1024
#: Output tokens of one translation (including </s>), whatever the length settings say.
MAX_OUTPUT_TOKENS = 512
#: ``decoding.max_length_ratio`` (output tokens per source token).
MAX_LENGTH_RATIO = 10.0
#: ``decoding.max_length_extra`` (output tokens added to ratio x source length).
MAX_LENGTH_EXTRA = 500
#: Candidates shown per step by ``explain``.
MAX_TOP_K = 100
