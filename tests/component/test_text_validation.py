"""`keel validate` on batches of texts, against a suite inferred from 500 real SMS messages:
every planted bad record is quarantined with its reason, a batch of held-out messages is
accepted without drift, and a batch in another language or of another topic mix is flagged as
drift with the words (and classes) that drive it named."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from keel.core.config import load_dataset_config
from keel.core.errors import ConfigError, DatasetError
from keel.data.tokenizer import load_tokenizer
from keel.modalities import ingest
from keel.validation.incoming import curate_batch, validate_batch
from keel.validation.text_profiling import profile_text_reference
from tests.text_validation_data import (REFERENCE_ROWS, held_out_messages, newsgroup_openings, sms_messages,
                                        spanish_batch, write_config, write_jsonl)

TEXT_DRIFT_CHECKS = {"label distribution", "tokens", "out-of-vocabulary rate", "embedding shift"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The reference version (500 messages), its inferred suite, and 200 held-out messages."""
    folder = tmp_path_factory.mktemp("text-validation")
    messages = sms_messages()
    rows = messages.iloc[:REFERENCE_ROWS]
    # A batch with planted records quarantines more than the shipped 5 %: allowed here, so that
    # its clean rows are written and counted.
    config_path = write_config(folder, rows, validation={"min_rows": 100, "max_rows": 100_000, "min_class_share": 0.1,
                                                         "max_class_share": 4.0, "max_quarantined_fraction": 0.2})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEEL_HOME", str(folder / "home"))
        config = load_dataset_config(config_path)
        version = ingest(config).version
        profiled = profile_text_reference(config, version, folder / "suite.json")
        held_out = held_out_messages(messages, rows, profiled["token_bounds"], load_tokenizer(version.tokenizer_path))
        yield {"folder": folder, "config": config, "version": version, "profiled": profiled, "rows": rows,
               "held_out": held_out, "messages": messages}


def _quarantine(report) -> pd.DataFrame:
    return pd.read_csv(report / "quarantine.csv", dtype=str, keep_default_na=False)


def test_the_suite_learns_bounds_shares_and_a_drift_reference_it_checks(reference):
    doc = reference["profiled"]["suite"]
    low, high = reference["profiled"]["token_bounds"]
    assert doc["inferred"] and doc["modality"] == "text" and 1 <= low < 10 and 60 < high < 400
    assert doc["reference"]["version"] == reference["version"].id
    assert set(doc["classes"]["reference_shares"]) == {"0", "1"} and 0.05 < doc["classes"]["reference_shares"]["1"] < 0.3
    assert len(doc["drift"]["reference_quantiles"]["tokens"]) == 101 and 0 <= doc["drift"]["oov"]["reference_rate"] < 0.05
    held = doc["drift"]["embedding"]["held_out_check"]
    assert held["rows"] >= 50 and held["auc"] < doc["drift"]["embedding"]["auc_max"]  # the reference does not drift from itself
    file = reference["folder"] / doc["text_reference"]["file"]
    with np.load(file) as arrays:
        assert arrays["embeddings"].shape == (doc["text_reference"]["embedded_rows"], 384)
        assert len(arrays["labels"]) == len(arrays["embeddings"]) and "call" in set(arrays["words"].tolist())


def test_held_out_messages_are_accepted_without_drift_and_curated(reference, tmp_path):
    batch = tmp_path / "held-out.csv.gz"
    batch.write_bytes(gzip.compress(reference["held_out"].to_csv(index=False).encode()))
    result = validate_batch(reference["config"], str(batch), tmp_path / "report")
    assert result.verdict == "accepted" and result.exit_code == 0, result.summary()
    assert {d["check"] for d in result.drift} == TEXT_DRIFT_CHECKS and not any(d["drifted"] for d in result.drift)
    report = tmp_path / "report"
    assert (report / "docs" / "index.html").exists() and json.loads((report / "report.json").read_text())["verdict"] == "accepted"
    clean = pd.read_parquet(report / "clean.parquet")
    assert list(clean.columns) == ["id", "label", "text"] and len(clean) == len(reference["held_out"]) == 200
    assert set(clean["label"]) == {"ham", "spam"} and clean["text"].tolist() == reference["held_out"]["text"].tolist()

    curated = curate_batch(reference["config"], report)
    assert curated["added"] and curated["rows"] == reference["version"].meta["rows"] + 200
    assert curated["version"] != reference["version"].id


def _planted(reference) -> tuple[list[dict], list[bytes], dict[str, set[str]]]:
    """100 held-out messages and planted records (JSON lines, raw lines), and each planted id's checks."""
    rows, held = reference["rows"], reference["held_out"]
    long_spam = next(t for t in rows["text"] if len(t.split()) >= 25)
    copied = _unique_reference_row(rows)
    records = [{"id": r.id, "label": r.label, "text": r.text} for r in held.iloc[:100].itertuples()]
    planted = {
        "p-missing": ({"label": "ham"}, {"text_missing"}),
        "p-null": ({"label": "ham", "text": None}, {"text_missing"}),
        "p-blank": ({"label": "spam", "text": "   "}, {"text_empty"}),
        "p-number": ({"label": "ham", "text": 42}, {"text_non_string"}),
        "p-list": ({"label": "ham", "text": ["see", "you"]}, {"text_non_string"}),
        "p-control": ({"label": "ham", "text": "ring ring\x07 bell"}, {"text_control"}),
        "p-mojibake": ({"label": "ham", "text": "See you at the cafÃ© at 5"}, {"text_mojibake"}),
        "p-huge": ({"label": "ham", "text": "word " * 20_000}, {"text_too_long"}),  # too long to count its tokens
        "p-tokens": ({"label": "ham", "text": " ".join(held["text"].iloc[100:130])}, {"tokens"}),
        "p-label": ({"label": "eggs", "text": "the ferry to the island leaves at noon"}, {"label_known"}),
        "p-nolabel": ({"label": None, "text": "bring the blue umbrella to the garden party"}, {"label"}),
        "p-copy": ({"label": "ham", "text": "  " + copied.text.upper().replace(" ", "  ") + " "}, {"copy_of_training_text"}),
        "p-near": ({"label": "spam", "text": long_spam.rsplit(" ", 1)[0] + " zebra"}, {"near_copy_of_training_text"}),
    }
    records += [{"id": key, **record} for key, (record, _) in planted.items()]
    records += [{"id": "dup", "label": "ham", "text": "are you coming to the quiz night at the old library"},
                {"id": "dup", "label": "ham", "text": "the quiz starts at eight, save me a seat by the window"}]
    raw = [b'{"id": "p-bytes", "label": "ham", "text": "caf\xe9 au lait tonight?"}']
    checks = {key: want for key, (_, want) in planted.items()} | {"dup": {"id"}, "p-bytes": {"text_bad_utf8"}}
    return records, raw, checks


def _unique_reference_row(rows: pd.DataFrame):
    """A reference message that no other reference message repeats (its id names it)."""
    from keel.data.textdups import normalised

    keys = rows["text"].map(normalised)
    return next(r for r, key in zip(rows.itertuples(), keys) if (keys == key).sum() == 1 and len(r.text) > 40)


def test_each_planted_record_is_quarantined_with_its_reason(reference, tmp_path):
    records, raw, checks = _planted(reference)
    batch = write_jsonl(tmp_path / "planted.jsonl", records, raw)
    before = batch.read_bytes()
    result = validate_batch(reference["config"], str(batch), tmp_path / "report")
    assert result.verdict == "accepted with quarantine" and result.exit_code == 1, result.summary()
    quarantine = _quarantine(tmp_path / "report")
    found = quarantine.groupby("id")["check"].agg(set).to_dict()
    assert found == checks | {"dup": {"id"}}, quarantine
    by_check = quarantine.set_index(["id", "check"])
    assert by_check.loc[("p-bytes", "text_bad_utf8"), "value"] == "caf\\xe9 au lait tonight?"  # escaped, never raw
    assert by_check.loc[("p-control", "text_control"), "value"] == "ring ring\\x07 bell"
    assert by_check.loc[("p-huge", "text_too_long"), "value"].startswith("word word") and \
        len(by_check.loc[("p-huge", "text_too_long"), "value"]) == 201
    assert by_check.loc[("p-tokens", "tokens"), "value"].split(" tokens: ")[0].isdigit()
    assert by_check.loc[("p-label", "label_known"), ["column", "value"]].tolist() == ["label", "eggs"]
    assert by_check.loc[("p-copy", "copy_of_training_text"), "value"].endswith(
        f"(training id {_unique_reference_row(reference['rows']).id})")
    assert "text.max_characters" in by_check.loc[("p-huge", "text_too_long"), "rule"]
    assert set(quarantine["column"]) == {"text", "label", "id"}
    assert by_check.loc[("p-bytes", "text_bad_utf8"), "row"] == str(len(records) + 1)  # the JSONL line
    assert result.quarantined_rows == len(checks) + 1 and result.clean_rows == 100
    clean = pd.read_parquet(tmp_path / "report" / "clean.parquet")
    assert clean["id"].tolist() == reference["held_out"]["id"].iloc[:100].tolist()
    sent_back = [json.loads(line) for line in (tmp_path / "report" / "quarantined_rows.jsonl").read_text().splitlines()]
    assert {r["id"]: r["text"] for r in sent_back}["p-number"] == 42 and len(sent_back) == result.quarantined_rows
    assert batch.read_bytes() == before  # the landed file is never touched


def test_another_language_is_drift_named_by_its_words(reference, tmp_path):
    batch = write_jsonl(tmp_path / "spanish.jsonl", spanish_batch())
    result = validate_batch(reference["config"], str(batch), tmp_path / "report")
    drift = {d["check"]: d for d in result.drift}
    assert not result.labelled and set(drift) == TEXT_DRIFT_CHECKS - {"label distribution"}
    assert drift["embedding shift"]["drifted"] and drift["embedding shift"]["value"] > 0.95, result.summary()
    assert result.verdict == "rejected" and result.exit_code == 1
    words = [w["word"] for w in result.drift_drivers["words"]]
    assert {"que", "el", "la", "en", "de"} & set(words), words
    assert result.drift_drivers["classes_by"] == "nearest reference text"
    reasons = " ".join(result.reasons)
    assert "reject_on_drift" in reasons and words[0] in reasons and words[0] in (tmp_path / "report" / "report.md").read_text()


def test_another_topic_mix_is_drift_named_by_its_words_and_classes(reference, tmp_path):
    news = newsgroup_openings()
    news.to_csv(tmp_path / "news.csv", index=False)
    result = validate_batch(reference["config"], str(tmp_path / "news.csv"), tmp_path / "report")
    drift = {d["check"]: d for d in result.drift}
    assert drift["embedding shift"]["drifted"] and drift["embedding shift"]["value"] > 0.9, result.summary()
    assert drift["label distribution"]["drifted"]  # all ham
    assert {c["class"] for c in result.drift_drivers["classes"]} == {"ham", "spam"}
    assert result.drift_drivers["classes_by"] == "labels"
    words = result.drift_drivers["words"]
    assert len(words) >= 3 and all(w["batch_share"] > w["reference_share"] for w in words)
    assert words[0]["word"] in drift["embedding shift"]["drivers"] and "spam" in drift["label distribution"]["drivers"]
    assert result.verdict == "rejected"


def test_an_unlabelled_parquet_batch_skips_the_label_checks(reference, tmp_path):
    held = reference["held_out"].iloc[:120]
    held[["id", "text"]].to_parquet(tmp_path / "batch.parquet", index=False)
    result = validate_batch(reference["config"], str(tmp_path / "batch.parquet"), tmp_path / "report")
    assert result.verdict == "accepted" and not result.labelled and result.exit_code == 0, result.summary()
    assert result.drift_drivers["classes_by"] == "nearest reference text"
    assert list(pd.read_parquet(tmp_path / "report" / "clean.parquet").columns) == ["id", "text"]


def test_a_file_without_texts_or_a_changed_drift_reference_is_an_error(reference, tmp_path):
    pd.DataFrame({"id": [1], "message": ["hello"]}).to_csv(tmp_path / "wrong.csv", index=False)
    with pytest.raises(DatasetError, match="no text column 'text'"):
        validate_batch(reference["config"], str(tmp_path / "wrong.csv"), tmp_path / "report")
    assert not (tmp_path / "report").exists()
    folder = tmp_path / "copy"
    folder.mkdir()
    doc = dict(reference["profiled"]["suite"])
    (folder / "suite.json").write_text(json.dumps(doc))
    (folder / doc["text_reference"]["file"]).write_bytes(b"not the reference")
    config = reference["config"].model_copy(update={"expectations": str(folder / "suite.json")})
    reference["held_out"].iloc[:120].to_csv(tmp_path / "batch.csv", index=False)
    with pytest.raises(ConfigError, match="does not match the sha256"):
        validate_batch(config, str(tmp_path / "batch.csv"), tmp_path / "report2")


def test_without_a_suite_file_the_structural_checks_run_against_the_current_version(reference, tmp_path):
    config = reference["config"].model_copy(update={"expectations": None})
    copied = _unique_reference_row(reference["rows"])
    records = spanish_batch()[:120] + [{"id": "p-copy", "text": copied.text.lower()}]
    batch = write_jsonl(tmp_path / "batch.jsonl", records)
    result = validate_batch(config, str(batch), tmp_path / "report")
    assert result.suite == "structural suite of sms-small" and result.drift == [], result.summary()
    assert result.verdict == "accepted with quarantine" and result.quarantined_rows == 1
    assert _quarantine(tmp_path / "report")[["id", "check"]].values.tolist() == [["p-copy", "copy_of_training_text"]]
    with pytest.raises(ConfigError, match="a labels file goes with IDX images"):
        validate_batch(config, str(batch), tmp_path / "report", labels_path=str(batch))
