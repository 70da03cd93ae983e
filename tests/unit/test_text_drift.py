"""The pure parts of text drift: the classifier two-sample test, the words and classes that
drive a drift, the OOV counts (as keel.data.tokenizer.oov_rate counts them) and the two-sample
token-length test."""

import numpy as np
import pandas as pd

from keel.data.tokenizer import oov_rate, train_wordpiece
from keel.validation.drift import DRIFT_COLUMNS
from keel.validation.text_drift import (document_frequencies, drivers_sentence, moved_classes, nearest_classes,
                                        oov_counts, over_represented_words, shift_test, two_sample_tokens)


def test_the_shift_test_tells_a_shifted_sample_and_not_a_fresh_one():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(400, 32))
    same = shift_test(reference, rng.normal(size=(150, 32)))
    assert 0.35 < same.auc < 0.65 and same.p_value > 0.01
    moved = rng.normal(size=(150, 32))
    moved[:, :4] += 1.0  # a shift along a few directions, as a new topic would make
    shifted = shift_test(reference, moved)
    assert shifted.auc > 0.85 and shifted.p_value < 1e-10
    assert (shifted.reference_rows, shifted.batch_rows) == (400, 150)


def test_over_represented_words_rank_by_smoothed_log_ratio_with_a_floor():
    reference = ["call me later", "see you later", "call now", "ok see you"] * 50
    batch = ["hola que tal", "que hora es", "hola amigo", "call me"] * 10 + ["rare word once"]
    words = over_represented_words(batch, dict(document_frequencies(reference)), len(reference))
    names = [w["word"] for w in words]
    assert names[:2] == ["hola", "que"] and "rare" not in names and "call" not in names and "me" not in names
    assert words[0]["reference_share"] == 0.0 and words[0]["batch_share"] == round(20 / 41, 4)
    assert "hola 0% -> 49%" in drivers_sentence([], words, nearest=False)


def test_moved_classes_and_nearest_reference_classes():
    moved = moved_classes(np.array([0.5, 0.49, 0.01]), np.array([0.5, 0.3, 0.2]), ["a", "b", "c"])
    assert [c["class"] for c in moved] == ["b", "c"]  # a did not move
    sentence = drivers_sentence(moved, [], nearest=True)
    assert sentence == "classes b 30% -> 49%, c 20% -> 1% (by each text's nearest reference text)"
    reference = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert nearest_classes(reference, np.array([0, 1]), np.array([[3.0, 0.1], [0.2, 0.5]])).tolist() == [0, 1]


def test_oov_counts_are_what_oov_rate_divides():
    tokenizer = train_wordpiece(["the cat sat on the mat", "a dog ran in the park"] * 20, vocab_size=120, lowercase=True)
    texts = ["the cat ran", "¿qué pasó? über straße", "the dog sat on a mat"]
    unknown, words = oov_counts(tokenizer, texts)
    assert words == 15 and unknown > 0  # ¿ qué pasó ? über straße: 6 words and unknown / words == oov_rate(tokenizer, texts)


def test_the_token_row_is_retested_as_a_two_sample_test():
    table = pd.DataFrame([("tokens", "KS D", 0.15, 0.2, 1e-5, 0.001), ("other", "KS D", 0.5, 0.2, 1e-9, 0.001)],
                         columns=DRIFT_COLUMNS[:-1])
    table["drifted"] = False
    two_sample_tokens(table, 200, 75)
    assert table.loc[0, "p_value"] > 0.05 and table.loc[1, "p_value"] == 1e-9 and table["drifted"].tolist() == [False, True]
