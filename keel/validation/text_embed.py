"""Encoder embeddings of texts for drift, and the reference file kept beside a text suite.

The embeddings are the packaged all-MiniLM-L6-v2 encoder's mean-pooled last hidden states
(keel.models.text.minilm, read from the package's folder: nothing is downloaded), with the
encoder's own tokenizer. The reference file (`<suite>.text-reference.npz`) holds the embeddings
of a sample of the reference's training texts and their classes, and the reference's word
document frequencies; the suite records its sha256, checked whenever it is read.
"""

from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from keel.core.atomic import atomic_path
from keel.core.errors import ConfigError
from keel.data.tokenizer import encode, load_tokenizer, minilm_folder, pad_batch
from keel.models.text import minilm

# Tokens per text the encoder reads: a whole message, or the opening of a post, is enough to
# tell what a text is about, and the cost of a batch stays seconds on two CPU cores.
ENCODER_MAX_LENGTH = 64
BATCH = 64


@functools.lru_cache(maxsize=1)
def _encoder() -> tuple[torch.nn.Module, object, str]:
    """(the MiniLM classifier in eval mode, its tokenizer, where its weights came from), loaded once per process."""
    model, _, source = minilm(2)
    model.eval()
    return model, load_tokenizer(minilm_folder() / "tokenizer.json"), source


def encoder_source() -> str:
    """Where the encoder's weights come from, as a suite records it."""
    return _encoder()[2]


def embed_texts(texts: list[str], max_length: int = ENCODER_MAX_LENGTH) -> np.ndarray:
    """float32 N x 384: each text's mean-pooled encoder embedding (texts cut to `max_length` tokens)."""
    model, tokenizer, _ = _encoder()
    ids, lengths = encode(tokenizer, list(texts), max_length)
    out = np.zeros((len(ids), model.head.in_features), dtype=np.float32)
    order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding per batch
    with torch.inference_mode():
        for start in range(0, len(order), BATCH):
            rows = order[start:start + BATCH]
            out[rows] = model.embed(pad_batch([ids[i] for i in rows])).float().numpy()
    return out


def save_reference(path: Path, embeddings: np.ndarray, labels: np.ndarray, words: dict[str, int]) -> str:
    """Writes the reference file; returns its sha256."""
    ranked = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, embeddings=np.asarray(embeddings, dtype=np.float16),
                        labels=np.asarray(labels, dtype=np.int64),
                        words=np.array([w for w, _ in ranked], dtype=str),
                        word_texts=np.array([c for _, c in ranked], dtype=np.int64))
    data = buffer.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def load_reference(path: Path, sha256: str) -> dict:
    """The reference file's arrays (embeddings float32, labels, words -> texts holding them);
    a missing or changed file is a ConfigError naming it."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: the text suite's drift reference is missing; re-run `keel validate profile`") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ConfigError(f"{path}: the drift reference does not match the sha256 its suite records (changed or "
                          "replaced); re-run `keel validate profile`")
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return {"embeddings": arrays["embeddings"].astype(np.float32), "labels": arrays["labels"],
                "words": dict(zip(arrays["words"].tolist(), arrays["word_texts"].tolist()))}
