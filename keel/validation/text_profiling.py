"""Inferring a text dataset's expectation suite from a reference version (its training rows).

The reference teaches: bounds on a text's length in the version's tokens (the training data's
range widened, as keel.validation.suite.bounds does for pixel statistics), the class shares,
and what drift is measured against -- the token-length distribution (quantiles for the KS
test) and the out-of-vocabulary rate of texts the tokenizer never saw (the evaluation rows), the
training texts' word frequencies, and the MiniLM embeddings of a sample of training texts,
kept beside the suite in a file whose sha256 the suite records. A held-out sample of the
reference (evaluation rows) goes through the shift test as a check that the reference does
not drift from itself.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from pathlib import Path

import numpy as np

from keel.core.config import DatasetConfig
from keel.data.tokenizer import load_tokenizer
from keel.data.versions import DatasetVersion
from keel.validation.drift import reference_quantiles
from keel.validation.suite import bounds, write_suite
from keel.validation.text_drift import document_frequencies, oov_counts, shift_test
from keel.validation.text_embed import ENCODER_MAX_LENGTH, embed_texts, encoder_source, save_reference
from keel.validation.text_suite import text_suite

REFERENCE_SAMPLE = 1000  # training texts embedded for the shift test
HELD_OUT_SAMPLE = 300  # evaluation texts embedded to check the test on the reference itself
MAX_WORDS = 20_000  # the most frequent training words kept for naming over-represented words
# Thresholds (a check drifts when its effect passes them and its test is significant at ALPHA).
THRESHOLDS = {"label_psi_max": 0.25, "ks_max": 0.2, "alpha": 0.001}
OOV_MAX_INCREASE = 0.02
AUC_MAX = 0.75
MIN_UNSEEN = 50  # evaluation rows needed to measure unseen texts' token lengths and OOV rate


def _stored_tokens(version: DatasetVersion) -> np.ndarray:
    """The version's token counts in stored order (its profile's ok rows by stored position)."""
    profile = version.profile()
    kept = profile[profile["stored"] >= 0].sort_values("stored")
    return kept["tokens"].to_numpy(dtype=np.int64)


def _learned(config: DatasetConfig, version: DatasetVersion, texts: list[str], train: np.ndarray,
             evaluation: np.ndarray, widen: float) -> dict:
    """Token bounds and class shares of the training data (train and evaluation rows), and the
    token-length quantiles and OOV rate of texts the tokenizer never saw (the evaluation rows:
    a training text tokenizes shorter, its words being the vocabulary's; all of the training
    data when fewer than MIN_UNSEEN)."""
    stored_tokens = _stored_tokens(version)
    reference = np.sort(np.concatenate([train, evaluation]))
    unseen = evaluation if len(evaluation) >= MIN_UNSEEN else reference
    lo, hi = bounds(stored_tokens[reference], widen, 1.0, 1e9)
    labels = version.labels()[reference]
    shares = {str(v): round(float(np.mean(labels == i)), 6) for i, v in enumerate(config.labels)}
    unknown, words = oov_counts(load_tokenizer(version.tokenizer_path), [texts[i] for i in unseen])
    return {
        "tokens": [int(math.floor(lo)), int(math.ceil(hi))],
        "classes": {"reference_shares": shares, "min_ratio": round(1.0 / 3.0, 4), "max_ratio": 3.0, "standard_errors": 4.0},
        "drift": {**THRESHOLDS, "reference_class_shares": [shares[str(v)] for v in config.labels],
                  "reference_quantiles": {"tokens": reference_quantiles(stored_tokens[unseen])},
                  "oov": {"reference_rate": round(unknown / words, 6) if words else 0.0, "max_increase": OOV_MAX_INCREASE},
                  "unseen_rows": {"rows": int(len(unseen)), "part": "evaluation" if unseen is evaluation else "train+evaluation"},
                  "embedding": {"auc_max": AUC_MAX, "folds": 5, "max_rows": REFERENCE_SAMPLE, "seed": 0}},
    }


def profile_text_reference(config: DatasetConfig, version: DatasetVersion, out: Path, widen: float = 0.1,
                           seed: int = 0) -> dict:
    """Writes the inferred text suite to `out` and its drift reference beside it
    (`<out stem>.text-reference.npz`); returns the suite, the paths and the held-out check."""
    started = time.perf_counter()
    config = version.classes(config)
    texts = version.texts()
    train, evaluation = version.indices("train"), version.indices("evaluation")
    learned = _learned(config, version, texts, train, evaluation, widen)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(train, size=min(REFERENCE_SAMPLE, len(train)), replace=False))
    embeddings = embed_texts([texts[i] for i in sample])
    words = document_frequencies([texts[i] for i in train])
    reference_path = Path(out).with_suffix(".text-reference.npz")
    sha = save_reference(reference_path, embeddings, version.labels()[sample], dict(words.most_common(MAX_WORDS)))
    held_out = {}
    if len(evaluation) >= 20:
        check = np.sort(rng.choice(evaluation, size=min(HELD_OUT_SAMPLE, len(evaluation)), replace=False))
        result = shift_test(embeddings, embed_texts([texts[i] for i in check]), seed=seed)
        held_out = {"rows": int(len(check)), "auc": round(result.auc, 4), "p_value": float(result.p_value)}
    learned["drift"]["embedding"]["held_out_check"] = held_out
    learned["text_reference"] = {"file": reference_path.name, "sha256": sha, "embedded_rows": int(len(sample)),
                                 "training_texts": int(len(train)), "words": min(len(words), MAX_WORDS),
                                 "encoder": encoder_source(), "max_length": ENCODER_MAX_LENGTH}
    learned["reference"] = {"version": version.id, "rows": int(len(texts)), "train_rows": int(len(train)),
                            "sources": version.meta["sources"],
                            "profiled": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    doc = text_suite(config, learned, widen)
    write_suite(doc, Path(out))
    return {"suite": doc, "suite_path": str(out), "reference_path": str(reference_path), "held_out": held_out,
            "token_bounds": learned["tokens"], "seconds": time.perf_counter() - started}
