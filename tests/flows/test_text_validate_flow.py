"""`keel validate profile` and `keel validate --curate` on a text dataset, as a data team runs
them on a landing folder: the suite and its drift reference are inferred, a CSV of held-out
messages is accepted and curated, a JSONL batch in another language is rejected for drift."""

import json

from cli.main import main
from keel.core.config import load_dataset_config
from keel.data.tokenizer import load_tokenizer
from keel.modalities import ingest
from tests.text_validation_data import (REFERENCE_ROWS, held_out_messages, sms_messages, spanish_batch, write_config,
                                        write_jsonl)


def test_profile_then_validate_a_landing_folder_of_texts_then_curate(tmp_path, keel_home, capsys):
    messages = sms_messages()
    rows = messages.iloc[:REFERENCE_ROWS]
    config_path = write_config(tmp_path, rows)
    assert main(["validate", "profile", "--dataset-config", str(config_path)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((tmp_path / "suite.json").read_text())
    assert doc["modality"] == "text" and (tmp_path / doc["text_reference"]["file"]).exists()
    assert "sms-small.text-reference.npz" not in printed and "suite.text-reference.npz" in printed and "held out" in printed

    version = ingest(load_dataset_config(config_path)).version  # the profiled version, reused
    held = held_out_messages(messages, rows, _bounds(doc), load_tokenizer(version.tokenizer_path))
    landing = tmp_path / "landing"
    landing.mkdir()
    held.to_csv(landing / "held-out.csv", index=False)
    write_jsonl(landing / "spanish.jsonl", spanish_batch())
    assert main(["validate", "--dataset-config", str(config_path), "--input", str(landing), "--curate"]) == 1
    out = capsys.readouterr().out
    assert "held-out.csv (200 rows) ACCEPTED" in out and "spanish.jsonl (200 rows, unlabelled) REJECTED" in out
    assert "drift in embedding shift" in out and "driven by" in out
    curated = ingest(load_dataset_config(config_path)).version
    assert curated.meta["rows"] == version.meta["rows"] + 200 and len(curated.meta["curated_batches"]) == 1


def _bounds(doc: dict) -> list[int]:
    """The suite's token bounds (its `tokens` expectation)."""
    tokens = next(e for e in doc["suites"]["rows"] if e["kwargs"].get("column") == "tokens")
    return [tokens["kwargs"]["min_value"], tokens["kwargs"]["max_value"]]
