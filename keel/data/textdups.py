"""Near-duplicate texts: the features that keel.data.neardup groups, for text.

A text's features are the set of its word n-grams (1..`ngram_words` words, lowercased), hashed
into 4,096 buckets and L2-normalised: the cosine of two texts is then the overlap of their
n-gram sets, so an exact copy (up to case and spacing) has cosine 1 and a message that differs
by a name or a number still shares most of its n-grams. They go through the same index,
grouping, split and leakage figures as images' pixels (keel.data.splits.plan_split).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from keel.data.neardup import GroupingFeatures

N_FEATURES = 4096
_SURROGATE = re.compile("[\udc80-\udcff]")


def normalised(text: str) -> str:
    """A text as exact-duplicate checks compare it: lowercased, runs of whitespace as one space."""
    return " ".join(text.lower().split())


@dataclass
class TextFeatures:
    """Hashed word 1..`ngram_words`-grams (binary, lowercased) of texts, L2-normalised."""

    ngram_words: int = 3

    @property
    def method(self) -> str:
        grams = "1-grams" if self.ngram_words == 1 else f"1-{self.ngram_words}-grams"
        return f"cosine of hashed word {grams}"

    def features(self, texts) -> np.ndarray:
        """float32 N x 4096, each row L2-normalised (all zeros for a text without words, which
        is then similar to nothing). A value that is not a string counts as no words."""
        from sklearn.feature_extraction.text import HashingVectorizer  # lazy: sklearn loads in ~1 s

        vectorizer = HashingVectorizer(n_features=N_FEATURES, ngram_range=(1, self.ngram_words), binary=True,
                                       lowercase=True, alternate_sign=False, norm="l2", dtype=np.float32)
        # The hasher encodes tokens as strict UTF-8: a lone surrogate (an undecodable byte) would raise.
        cleaned = [_SURROGATE.sub("\ufffd", t) if isinstance(t, str) else "" for t in texts]
        if not cleaned:
            return np.zeros((0, N_FEATURES), np.float32)
        return np.asarray(vectorizer.transform(cleaned).toarray(), dtype=np.float32)

    def grouping(self, texts) -> GroupingFeatures:
        """What near-duplicate grouping compares for `texts` (no shapes: texts are not shifted)."""
        return GroupingFeatures(self.features(texts), self.method, None)
