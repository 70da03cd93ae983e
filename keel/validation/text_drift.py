"""Drift of a batch of texts against the reference: token lengths and labels (as for pixel
statistics, keel.validation.drift), the out-of-vocabulary rate against the dataset's tokenizer,
and an embedding-based shift test that names what drives it.

The shift test is a classifier two-sample test (Lopez-Paz & Oquab, 2017): a logistic regression
learns to tell the batch's encoder embeddings from the reference's, and its cross-validated
(out-of-fold) AUC is the effect size -- 0.5 when the two cannot be told apart, 1.0 when every
batch text is unlike every reference text. It was chosen over a kernel two-sample test (MMD
with a permutation test) because its figure reads the same for any encoder and batch size
(an MMD value depends on a kernel bandwidth that has no good default in 384 dimensions), it
costs a few linear fits rather than a kernel matrix per permutation, and its p-value needs no
permutations: each out-of-fold score comes from a model that never saw that text, so under no
shift the batch's scores and the reference's are exchangeable and a one-sided Mann-Whitney U
test on them is valid (cross-fitting in high dimensions biases the AUC below 0.5 under no
shift, which only makes the test conservative).

A drift says what drives it: the classes whose shares moved most (the labels when the batch
has them, else each batch text's nearest reference text's class) and the words most
over-represented in the batch (a smoothed log-ratio of the share of texts that hold them).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from keel.validation.drift import DRIFT_COLUMNS

_WORD = re.compile(r"[^\W\d_]{2,}")
# The words shown: at most this many, each in at least this share of the batch (and 3 texts).
TOP_WORDS = 8
MIN_WORD_SHARE = 0.03
# Classes whose share moved less than this are not named.
MIN_SHARE_MOVE = 0.02


def words_of(text: str) -> set[str]:
    """The distinct lowercased words (letters only, two or more) of one text."""
    return set(_WORD.findall(text.lower()))


def document_frequencies(texts: list[str]) -> Counter:
    """Word -> the number of texts that hold it."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(words_of(text))
    return counts


def over_represented_words(batch_texts: list[str], reference_words: dict[str, int], reference_texts: int,
                           top: int = TOP_WORDS) -> list[dict]:
    """The words most over-represented in the batch: log((b + 0.5) / (n_b + 1)) - log((r + 0.5) /
    (n_r + 1)) of the number of texts b and r that hold a word among n_b and n_r; a word the
    reference list lacks counts as r = 0. Only words in at least 3 texts and MIN_WORD_SHARE of
    the batch are ranked, so a single odd text does not name the drift."""
    counts = document_frequencies(batch_texts)
    n = len(batch_texts)
    floor = max(3, MIN_WORD_SHARE * n)
    ranked = []
    for word, b in counts.items():
        if b < floor:
            continue
        r = reference_words.get(word, 0)
        ratio = np.log((b + 0.5) / (n + 1)) - np.log((r + 0.5) / (reference_texts + 1))
        ranked.append({"word": word, "log_ratio": round(float(ratio), 3), "batch_share": round(b / n, 4),
                       "reference_share": round(r / max(reference_texts, 1), 4)})
    ranked.sort(key=lambda w: (-w["log_ratio"], w["word"]))
    return [w for w in ranked[:top] if w["log_ratio"] > 0]


def moved_classes(batch_shares: np.ndarray, reference_shares: np.ndarray, class_names: list[str],
                  top: int = 3) -> list[dict]:
    """The classes whose share moved most (by absolute change), largest first."""
    delta = np.asarray(batch_shares, dtype=float) - np.asarray(reference_shares, dtype=float)
    order = np.argsort(-np.abs(delta), kind="stable")[:top]
    return [{"class": class_names[i], "batch_share": round(float(batch_shares[i]), 4),
             "reference_share": round(float(reference_shares[i]), 4)} for i in order if abs(delta[i]) >= MIN_SHARE_MOVE]


def nearest_classes(reference: np.ndarray, reference_labels: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Each batch embedding's nearest reference embedding's class (cosine similarity)."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    return np.asarray(reference_labels)[np.argmax(unit(batch) @ unit(reference).T, axis=1)]


@dataclass
class ShiftTest:
    """The classifier two-sample test's outcome: out-of-fold AUC, its p-value, and the sizes."""

    auc: float
    p_value: float
    reference_rows: int
    batch_rows: int


def shift_test(reference: np.ndarray, batch: np.ndarray, folds: int = 5, seed: int = 0) -> ShiftTest:
    """Whether a classifier tells batch embeddings from reference ones (module docstring)."""
    from scipy import stats
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    x = np.vstack([reference, batch]).astype(np.float32)
    y = np.r_[np.zeros(len(reference), dtype=int), np.ones(len(batch), dtype=int)]
    scores = np.empty(len(y))
    splits = StratifiedKFold(n_splits=min(folds, len(reference), len(batch)), shuffle=True, random_state=seed)
    for train, test in splits.split(x, y):
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(x[train], y[train])
        scores[test] = model.decision_function(x[test])
    auc = float(roc_auc_score(y, scores))
    p = float(stats.mannwhitneyu(scores[y == 1], scores[y == 0], alternative="greater").pvalue)
    return ShiftTest(auc, p, len(reference), len(batch))


def oov_counts(tokenizer, texts: list[str]) -> tuple[int, int]:
    """(words the vocabulary cannot spell, words) of the texts, counted as
    keel.data.tokenizer.oov_rate counts them (the rate is their ratio); the test needs both."""
    unknown = tokenizer.token_to_id("[UNK]")
    words = unknown_words = 0
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        words += len({w for w in encoding.word_ids if w is not None})
        unknown_words += len({w for token, w in zip(encoding.ids, encoding.word_ids) if token == unknown and w is not None})
    return unknown_words, words


def oov_test(unknown: int, words: int, reference_rate: float, max_increase: float) -> tuple[float, float, float]:
    """(batch OOV rate, threshold, p-value of a one-sided binomial test against the reference rate)."""
    from scipy import stats

    if words == 0:
        return float("nan"), reference_rate + max_increase, float("nan")
    p = stats.binomtest(unknown, words, min(max(reference_rate, 1e-6), 1.0), alternative="greater").pvalue
    return unknown / words, reference_rate + max_increase, float(p)


def two_sample_tokens(table: pd.DataFrame, batch_texts: int, reference_texts: int | None) -> None:
    """Re-tests the token-length row of a drift table as the two-sample KS test it is: its
    reference quantiles come from `reference_texts` texts (a few hundred evaluation rows, say),
    whose own noise a one-sample p-value would count as drift; the effective size is n m / (n + m)."""
    from scipy import stats

    rows = table["check"] == "tokens"
    if not reference_texts or not rows.any() or not batch_texts:
        return
    effective = max(1, round(batch_texts * reference_texts / (batch_texts + reference_texts)))
    table.loc[rows, "p_value"] = [float(stats.kstwo.sf(d, effective)) for d in table.loc[rows, "value"]]
    table["drifted"] = (table["value"] > table["threshold"]) & (table["p_value"] < table["alpha"])


def drivers_sentence(classes: list[dict], words: list[dict], nearest: bool) -> str:
    """The drivers in words: 'classes spam 13% -> 40% (...); words que 0% -> 35%, ...'."""
    parts = []
    if classes:
        how = " (by each text's nearest reference text)" if nearest else ""
        parts.append("classes " + ", ".join(f"{c['class']} {c['reference_share']:.0%} -> {c['batch_share']:.0%}"
                                             for c in classes) + how)
    if words:
        parts.append("words " + ", ".join(f"{w['word']} {w['reference_share']:.0%} -> {w['batch_share']:.0%}"
                                          for w in words))
    return "; ".join(parts)


def text_drift_rows(shift: ShiftTest | None, oov: tuple[float, float, float] | None, drift: dict,
                    drivers: str) -> pd.DataFrame:
    """The drift rows only text has (OOV rate, embedding shift), with the drivers on each."""
    alpha = drift["alpha"]
    rows = []
    if oov is not None:
        rows.append(("out-of-vocabulary rate", "share of words [UNK]", oov[0], oov[1], oov[2], alpha))
    if shift is not None:
        rows.append(("embedding shift", "classifier AUC", shift.auc, drift["embedding"]["auc_max"], shift.p_value, alpha))
    table = pd.DataFrame(rows, columns=DRIFT_COLUMNS[:-1])
    table["drifted"] = (table["value"] > table["threshold"]) & (table["p_value"] < table["alpha"])
    table["drivers"] = drivers
    return table
