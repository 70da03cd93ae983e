"""Reading text files (keel.data.text_table): CSV gzip or not, parquet, JSONL; every record kept
as read so that keel.data.text_rule can judge it; files that are no table of texts refused in
one sentence."""

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keel.core.config import DatasetConfig
from keel.core.errors import DatasetError
from keel.data.text_rule import text_problems
from keel.data.text_table import read_text_file, text_format
from keel.data.textdups import TextFeatures

CSV = b'id,label,text\n7,ham,"Ok lar... Joking wif u oni..."\n8,spam,"Free entry, call 0800, now"\n\n9,ham,\n'


def config(**overrides) -> DatasetConfig:
    return DatasetConfig(**{"name": "texts", "format": "text", "train": [{"path": "x.csv"}], "id_column": "id",
                            **overrides})


def test_csv_gzip_or_not_reads_the_same_records_with_an_empty_cell_missing(tmp_path):
    plain, zipped = tmp_path / "texts.csv", tmp_path / "texts.csv.gz"
    plain.write_bytes(b"\xef\xbb\xbf" + CSV)  # Excel's byte-order mark before the header
    zipped.write_bytes(gzip.compress(CSV))
    for path in (plain, zipped):
        rows = read_text_file(str(path), config())
        assert rows.columns == ["id", "label", "text"]
        assert rows.texts == ["Ok lar... Joking wif u oni...", "Free entry, call 0800, now", None]
        assert rows.labels == ["ham", "spam", "ham"] and rows.ids == ["7", "8", "9"]
        assert rows.numbers.tolist() == [1, 2, 3]  # data rows: the blank line is no record
    assert read_text_file(str(plain), config()).sha256 != read_text_file(str(zipped), config()).sha256


def test_invalid_utf8_is_kept_as_surrogates_and_flagged_not_fatal(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"id,label,text\nr\xe9,ham,caf\xe9 ok\n2,spam,fine\n")
    rows = read_text_file(str(path), config())
    assert rows.texts[0] == "caf\udce9 ok" and rows.labels == ["ham", "spam"]
    assert rows.ids == ["r\\xe9", "2"]  # ids are names in reports and tables: the byte written out
    problems = text_problems(rows.texts)
    assert problems["text_bad_utf8"].tolist() == [True, False]


def test_jsonl_keeps_non_strings_and_counts_lines(tmp_path):
    path = tmp_path / "texts.jsonl"
    lines = [{"text": "hello there", "label": "ham"}, {"text": 42, "label": "spam"},
             {"text": ["a", "list"], "label": "ham"}, {"label": "ham"}]
    path.write_text("\n".join(json.dumps(line) for line in lines[:2]) + "\n\n" + "\n".join(json.dumps(x) for x in lines[2:]))
    rows = read_text_file(str(path), config(id_column=None))
    assert rows.texts == ["hello there", 42, ["a", "list"], None]
    assert rows.numbers.tolist() == [1, 2, 4, 5] and rows.ids == ["1", "2", "4", "5"]
    problems = text_problems(rows.texts)
    assert problems["text_non_string"].tolist() == [False, True, True, False]
    assert problems["text_missing"].tolist() == [False, False, False, True]


def test_parquet_keeps_integers_as_non_strings(tmp_path):
    path = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "label": ["ham", "spam"],
                             "text": pa.array(["a message", None], pa.string())}), path)
    numbers = tmp_path / "numbers.pq"
    pq.write_table(pa.table({"label": [0, 1], "text": [5, 6]}), numbers)
    rows = read_text_file(str(path), config())
    assert rows.texts == ["a message", None] and rows.ids == ["a", "b"]
    assert read_text_file(str(numbers), config(id_column=None)).texts == [5, 6]
    assert text_format("upload.bin", data=path.read_bytes()) == "parquet"


def test_a_file_without_the_text_column_names_file_column_and_fix(tmp_path):
    path = tmp_path / "messages.csv"
    path.write_bytes(b"label,message\nham,hi\n")
    with pytest.raises(DatasetError, match=r"messages\.csv: no text column 'text' \(its columns: label, message\); "
                                           r"set text_column in the dataset config"):
        read_text_file(str(path), config(id_column=None))
    with pytest.raises(DatasetError, match=r"messages\.csv: no label column 'category'"):
        read_text_file(str(path), config(id_column=None, text_column="message", label_column="category"))
    assert read_text_file(str(path), config(id_column=None, text_column="message", label_column="category"),
                          require_labels=False).labels is None


def test_unparseable_files_are_one_sentence(tmp_path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_bytes(b"label,text\nham,hello, world\n")
    with pytest.raises(DatasetError, match=r"ragged\.csv: data row 1 has 3 fields but the header has 2; quote texts"):
        read_text_file(str(ragged), config(id_column=None))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine", "label": "ham"}\n{"text": "oops"\n')
    with pytest.raises(DatasetError, match=r"broken\.jsonl: line 2 is not JSON"):
        read_text_file(str(broken), config(id_column=None))
    not_parquet = tmp_path / "fake.parquet"
    not_parquet.write_bytes(b"label,text\nham,hi\n")
    with pytest.raises(DatasetError, match=r"fake\.parquet: not a readable parquet file"):
        read_text_file(str(not_parquet), config(id_column=None))


def test_text_features_join_copies_and_keep_different_texts_apart():
    texts = ["Sorry, I'll call later", "sorry,   i'll CALL later", "Free entry in 2 a wkly comp to win FA Cup", "",
             "bad \udcff byte"]
    features = TextFeatures(3).features(texts)
    assert features.shape == (5, 4096) and features.dtype == np.float32
    norms = np.linalg.norm(features, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 2, 4]], 1.0, rtol=1e-5)
    assert norms[3] == 0  # no words: similar to nothing
    assert features[0] @ features[1] > 0.999 and features[0] @ features[2] < 0.2
    grouping = TextFeatures(2).grouping(texts)
    assert grouping.method == "cosine of hashed word 1-2-grams" and grouping.shape is None
