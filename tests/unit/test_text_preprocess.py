"""A scoring input's texts as a text model takes them: token ids of the usable texts, one reason
for each refused row, over-long texts truncated and noted (keel.modalities.text_preprocess)."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from keel.data.text_rule import SCORING_CHECKS
from keel.data.tokenizer import load_tokenizer, train_wordpiece
from keel.modalities import modality_for
from keel.modalities.text_preprocess import SCORING_REASONS
from tests.conftest import REPO

SMS = REPO / "data" / "sms-spam" / "sms_spam.csv.gz"
MAX_LENGTH = 24


@pytest.fixture(scope="module")
def sms() -> pd.DataFrame:
    return pd.read_csv(SMS, nrows=300)


@pytest.fixture(scope="module")
def config(tmp_path_factory, sms) -> dict:
    """A text model's config as a loader leaves it: the tokenizer file set at run time."""
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    train_wordpiece(sms["text"].tolist(), vocab_size=2000, lowercase=True).save(str(path))
    return {"input": "text", "text_column": "message", "max_length": MAX_LENGTH, "tokenizer_file": str(path),
            "labels": [0, 1], "class_names": ["ham", "spam"], "label_column": "label"}


def planted(sms: pd.DataFrame) -> list:
    """Real messages with a bad value planted at positions 1..7, a 5,000-character text at 8 and a
short one at 9."""
    texts = sms["text"].head(12).tolist()
    texts[1:8] = [None, float("nan"), 42, "   \n", "caf\udce9 au lait", "I love the cafÃ© near the station", "bell\x07 ring"]
    texts[8] = ("win a free prize now " * 250)[:5000]
    texts[9] = "Ok lar... Joking wif u oni..."
    return texts


EXPECTED = {1: "missing text", 2: "missing text", 3: "not a string (a number, list or object is not a text)",
            4: "empty text (nothing but whitespace)", 5: SCORING_REASONS["text_bad_utf8"],
            7: "control characters (other than tab and newline)"}


def test_every_scoring_check_has_a_reason():
    assert set(SCORING_REASONS) == set(SCORING_CHECKS)


def test_bad_rows_are_refused_with_one_reason_each_and_long_texts_truncated(sms, config):
    texts = planted(sms)
    prepared = modality_for(config).preprocess(pd.DataFrame({"message": pd.Series(texts, dtype=object)}), config)
    assert dict(zip(prepared.problems["position"], prepared.problems["reason"])) == EXPECTED
    assert prepared.problems["column"].eq("message").all()
    values = dict(zip(prepared.problems["position"], prepared.problems["value"]))
    assert values[1] == "" and values[5] == "caf\\xe9 au lait" and values[7] == "bell\\x07 ring"  # escaped for reports
    assert np.flatnonzero(prepared.good).tolist() == [0, 6, 8, 9, 10, 11]
    # Mojibake is scored as ftfy repairs it, and noted; the same text written right scores the same.
    notes = dict(zip(np.flatnonzero(prepared.good), prepared.notes))
    assert notes[6] == "repaired mojibake (ftfy)"
    right = modality_for(config).preprocess(pd.DataFrame({"message": ["I love the café near the station"]}), config)
    row = prepared.inputs[1][prepared.inputs[1] != 0]
    assert row.tolist() == right.inputs[0][right.inputs[0] != 0].tolist()
    ids = prepared.inputs
    assert ids.dtype == torch.int64 and ids.shape[0] == 6 and ids.shape[1] <= MAX_LENGTH
    assert (ids[:, 0] == 2).all()  # [CLS] first
    tokenizer = load_tokenizer(config["tokenizer_file"])
    scored = [0, 8, 9, 10, 11]  # the texts without mojibake
    full = [len(tokenizer.encode(texts[i]).ids) for i in scored]
    assert full[1] > 1000 and min(full) <= MAX_LENGTH  # the 5,000 characters, and a message that fits
    truncated = [f"truncated: {n} tokens > max_length {MAX_LENGTH}" if n > MAX_LENGTH else "" for n in full]
    assert [notes[i] for i in scored] == truncated
    assert ids[2].tolist()[-1] == 3  # cut, and still closed by [SEP]
    fits = full.index(min(full))
    short = tokenizer.encode(texts[scored[fits]]).ids
    fits = [0, 2, 3, 4, 5][fits]  # its row among the scored inputs
    assert ids[fits, :len(short)].tolist() == short and (ids[fits, len(short):] == 0).all()  # padded with [PAD]


def test_an_arrow_table_is_read_as_a_frame_is(sms, config):
    texts = [sms["text"][0], None, "", sms["text"][1]]
    from_arrow = modality_for(config).preprocess(pa.table({"message": texts}), config)
    from_frame = modality_for(config).preprocess(pd.DataFrame({"message": texts}), config)
    assert from_arrow.problems.equals(from_frame.problems) and from_arrow.good.tolist() == [True, False, False, True]
    assert torch.equal(from_arrow.inputs, from_frame.inputs)


def test_a_missing_text_column_refuses_every_row(sms, config):
    prepared = modality_for(config).preprocess(sms.head(5), config)  # its texts are in `text`, not `message`
    assert not prepared.good.any() and len(prepared.problems) == 5 and len(prepared.inputs) == 0
    assert prepared.first_problem() == ("row 0 column message: no `message` column: send one text per row in a column "
                                        "named message")


def test_no_usable_text_needs_no_tokenizer(config):
    prepared = modality_for(config).preprocess(pd.DataFrame({"message": ["", None]}), {**config, "tokenizer_file": None})
    assert prepared.problems["reason"].tolist() == ["empty text (nothing but whitespace)", "missing text"]
    assert tuple(prepared.inputs.shape) == (0, 0)
