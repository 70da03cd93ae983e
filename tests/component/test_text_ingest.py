"""Text ingest on a few hundred real SMS messages with planted bad records: each is quarantined
with its reason, exact copies stay on one side of the split, the vocabulary is learnt from the
training part alone, the row checks are real Great Expectations, and a rerun reuses the version."""

import csv
import gzip
import io
import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from keel.core.config import load_dataset_config
from keel.data.textdups import normalised
from keel.data.tokenizer import load_tokenizer, train_wordpiece
from keel.modalities import ingest, modality_for
from keel.validation.checks import run_suites
from tests.conftest import REPO

SMS = REPO / "data" / "sms-spam" / "sms_spam.csv.gz"
COPY = "Sorry, I'll call later"
HELD_OUT_WORD = "zqxjvblorf"
# id -> the check that must set it aside
PLANTED = {"p-missing": "text_missing", "p-blank": "text_empty", "p-bytes": "text_bad_utf8", "p-long": "text_too_long",
           "p-label": "label_unknown", "p-control": "text_control", "q-int": "text_non_string",
           "t-number": "text_non_string", "t-nan": "text_missing", "t-dup": "duplicate_across_splits"}


@pytest.fixture(scope="module")
def sms() -> pd.DataFrame:
    rows = pd.read_csv(SMS, dtype=str, keep_default_na=False)
    return rows[~rows["text"].str.contains("[\x80-\x9f]")]  # the file's own cp1252 mojibake is tested elsewhere


def _csv_bytes(rows: pd.DataFrame) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([["id", "label", "text"], *rows[["id", "label", "text"]].values.tolist()])
    return out.getvalue().encode()


def write_dataset(folder, sms: pd.DataFrame):
    """A training CSV (300 real messages, 4 more copies of one, planted bad rows), a parquet of
    non-string texts, and a JSONL test file (40 real messages and planted ones); its config."""
    train = sms.iloc[:300]
    copies = pd.DataFrame({"id": [f"c{i}" for i in range(4)], "label": "ham",
                           "text": [COPY, COPY.upper(), f"  {COPY}  ", COPY.replace(" ", "   ")]})
    planted = (b'p-missing,ham,\np-blank,spam,"   "\np-bytes,ham,caf\xe9 au lait tonight?\n'
               b'p-long,ham,"' + b"word " * 20_000 + b'"\np-label,eggs,see you at the station\n'
               b'p-control,ham,"ring ring\x07 bell"\n')
    (folder / "train.csv.gz").write_bytes(gzip.compress(_csv_bytes(pd.concat([train, copies])) + planted))
    pq.write_table(pa.table({"id": ["q-int"], "label": ["spam"], "text": [12345]}), folder / "more.parquet")
    test = [{"id": r.id, "label": r.label, "text": r.text} for r in sms.iloc[300:340].itertuples()]
    test += [{"id": f"t-word{i}", "label": "ham", "text": f"{HELD_OUT_WORD} is the word of the day {i}"} for i in range(3)]
    lines = [json.dumps(r) for r in test] + ['{"id": "t-number", "label": "ham", "text": 42}',
                                             '{"id": "t-nan", "label": "spam", "text": NaN}',
                                             json.dumps({"id": "t-dup", "label": "ham", "text": train["text"].iloc[5].upper()})]
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")
    config = {"name": "sms-small", "format": "text", "train": [{"path": "train.csv.gz"}, {"path": "more.parquet"}],
              "test": [{"path": "test.jsonl"}], "id_column": "id", "classes": ["ham", "spam"],
              "evaluation_split": {"by": "group", "fraction": 0.2, "seed": 0, "threshold": 0.8}}
    path = folder / "sms-small.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_dataset_config(path)


@pytest.fixture(scope="module")
def version(tmp_path_factory, sms):
    folder = tmp_path_factory.mktemp("texts")
    config = write_dataset(folder, sms)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEEL_HOME", str(folder / "home"))  # no curated batches of a real home join in
        first = ingest(config, folder / "versions")
        again = ingest(config, folder / "versions")
    assert not first.reused and again.reused and again.version.id == first.version.id
    return first.version


def test_each_planted_record_is_quarantined_with_its_reason(version, sms):
    profile = version.profile().set_index("id")
    for record, check in PLANTED.items():
        assert profile.loc[record, "status"] == "quarantined" and profile.loc[record, "reason"] == check, record
    quarantine = pd.read_csv(version.path / "quarantine.csv", dtype=str, keep_default_na=False).set_index("id")
    assert set(PLANTED) <= set(quarantine.index)
    assert quarantine.loc["p-bytes", "value"] == "caf\\xe9 au lait tonight?"  # the byte written out, never raw
    assert quarantine.loc["p-label", "column"] == "label" and quarantine.loc["p-label", "value"] == "eggs"
    assert quarantine.loc["p-long", "column"] == "text" and len(quarantine.loc["p-long", "value"]) == 201
    assert "text.max_characters" in quarantine.loc["p-long", "reason"]
    assert profile.loc["t-dup", "duplicate_across_splits"] and profile.loc["p-long", "characters"] == 100_000
    meta = version.meta
    assert meta["format"] == "text" and meta["image"] is None and meta["class_names"] == ["ham", "spam"]
    assert meta["quarantined"] == len(quarantine) and meta["rows"] + meta["quarantined"] == 310 + 1 + 46
    assert meta["train_rows"] + meta["evaluation_rows"] == 304
    # The real messages of the test file that repeat a training message are set aside too.
    training = {normalised(t) for t in sms["text"].iloc[:300]}
    repeats = [str(i) for i, t in zip(sms["id"].iloc[300:340], sms["text"].iloc[300:340]) if normalised(t) in training]
    assert repeats and (profile.loc[repeats, "reason"] == "duplicate_across_splits").all()
    assert meta["test_rows"] == 43 - len(repeats)


def test_stored_texts_labels_and_examples_line_up(version, sms):
    texts, labels = version.texts(), version.labels()
    assert len(texts) == len(labels) == version.meta["rows"] and labels.dtype == np.int64
    assert version.meta["labels"] == [0, 1] and set(np.unique(labels)) == {0, 1}
    stored = version.profile().query("status == 'ok'").sort_values("stored")
    assert stored["label"].map({"ham": 0, "spam": 1}).tolist() == labels.tolist()
    assert texts[0] == sms["text"].iloc[0]
    examples = modality_for(version).examples(version, np.array([0, 2]))
    assert examples.columns.tolist() == ["text"] and examples["text"].tolist() == [texts[0], texts[2]]
    with pytest.raises(Exception, match="holds texts, not images"):
        version.images()


def test_exact_copies_stay_on_one_side_of_the_split(version):
    stored = version.profile().query("status == 'ok'")
    copies = stored[stored["id"].str.fullmatch(r"c\d")]
    assert len(copies) == 4 and copies["group"].nunique() == 1 and copies["part"].nunique() == 1
    texts = version.texts()
    keys = pd.Series([normalised(texts[i]) for i in stored["stored"]], index=stored.index)
    assert (stored.groupby(keys)["part"].nunique() == 1).all()
    assert not stored["duplicate_across_splits"].any()
    assert version.meta["leakage"]["evaluation"]["near_copies"] == 0


def test_the_vocabulary_is_learnt_from_the_training_part_only(version):
    tokenizer = load_tokenizer(version.tokenizer_path)
    vocab = tokenizer.get_vocab()
    assert [tokenizer.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert HELD_OUT_WORD not in vocab and tokenizer.encode(HELD_OUT_WORD).tokens[1:-1] != [HELD_OUT_WORD]
    texts = version.texts()
    train = [texts[i] for i in version.indices("train")]
    evaluation = [texts[i] for i in version.indices("evaluation")]
    seen = " ".join(train).lower()
    unseen = {w for t in evaluation for w in re.findall(r"[a-z]{6,}", t.lower()) if w not in seen}
    assert unseen and not unseen & set(vocab)  # words of evaluation rows alone never become tokens
    retrained = train_wordpiece(train, version.meta["vocab_size"], lowercase=True)
    assert retrained.get_vocab() == vocab  # the same vocabulary again from the training texts alone
    profile = version.profile().set_index("id")
    assert profile.loc["p-missing", "tokens"] == 0 and profile.loc["t-word0", "tokens"] > 8
    lengths = version.meta["token_lengths"]
    assert lengths["p0"] <= lengths["p50"] <= lengths["p100"] and lengths["p0"] >= 3  # [CLS] word [SEP] at least


def test_the_row_checks_are_great_expectations_that_pass_on_stored_rows_only(version):
    config = version.classes(load_dataset_config(version.path.parents[2] / "sms-small.yaml"))
    rows = modality_for(config).expectations(config)["rows"]
    profile = version.profile()
    clean = run_suites({"rows": profile[profile["status"] == "ok"]}, {"rows": rows}, "clean")
    assert all(r.success for r in clean.results["rows"])
    dirty = run_suites({"rows": profile}, {"rows": rows}, "dirty")
    failed = {r.expectation_config.kwargs.get("column") for r in dirty.results["rows"] if not r.success}
    # Every planted problem fails its check (an unknown label: label_known); nothing else fails.
    assert failed == {"label_known" if check == "label_unknown" else check for check in PLANTED.values()}


def test_a_group_column_decides_the_groups_and_classes_come_from_the_labels(tmp_path, keel_home, sms):
    rows = sms.iloc[:200].assign(sender=[f"s{i % 25}" for i in range(200)])
    rows = rows.assign(label=rows["label"].map({"ham": "normal", "spam": "junk"}))
    rows[["sender", "label", "text"]].to_csv(tmp_path / "by-sender.csv", index=False)
    path = tmp_path / "by-sender.yaml"
    path.write_text(yaml.safe_dump({"name": "by-sender", "format": "text", "train": [{"path": "by-sender.csv"}],
                                    "group_column": "sender", "evaluation_split": {"by": "column", "fraction": 0.2}}))
    version = ingest(load_dataset_config(path), tmp_path / "versions").version
    assert version.meta["class_names"] == ["junk", "normal"]  # the training labels, sorted
    stored = version.profile().query("status == 'ok'")
    assert stored.groupby("group_value")["group"].nunique().eq(1).all() and stored["group"].nunique() == 25
    assert stored.groupby("group_value")["part"].nunique().eq(1).all()
    assert version.meta["evaluation_split"]["grouping"]["method"] == "column"
