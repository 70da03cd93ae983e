"""`keel predict` with a text model that `keel train` trained and registered: CSV, parquet and
JSONL files of real messages with planted bad rows, per-row errors, truncated texts flagged,
accuracy on class names, reuse on a rerun."""

import gzip
import hashlib
import json

import pandas as pd
import pytest

from cli.main import main
from tests.console import console
from tests.text_models import LONG_TEXT, MAX_LENGTH, sms_rows, write_sms_config

MOJIBAKE = "I love the cafÃ© near the station"


def keel(*argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the `keel` command."""
    with console() as (out, err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def sms() -> pd.DataFrame:
    return sms_rows(120)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """bert-tiny trained one epoch (32 tokens) on 300 real messages by `keel train`, registered
    and made champion by its gate."""
    home = tmp_path_factory.mktemp("text-predict-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("KEEL_HOME", str(home))
    config = write_sms_config(home, sms_rows(300))
    code, printed, said = keel("train", "--dataset-config", str(config), "--model", "bert-tiny", "--epochs", "1",
                               "--max-length", str(MAX_LENGTH), "--batch-size", "32", "--time-budget", "0", "--floor", "0")
    assert code == 0, (printed + said)[-3000:]
    yield {"name": "keel-sms-small"}
    patch.undo()


def landing(folder, sms: pd.DataFrame) -> dict:
    """A CSV (gzip), a parquet and a JSONL file of real messages with planted bad rows; returns
    the errors each should give: (file, row, id) -> reason."""
    folder.mkdir()
    csv = sms.iloc[:30].copy().astype(object)
    csv.loc[2, "text"] = None  # an empty cell
    csv.loc[4, "text"] = "   "
    csv.loc[6, "text"] = "PLANTED-BYTES"
    csv.loc[8, "text"] = "ring the bell\x07 now"
    csv.loc[10, "text"] = LONG_TEXT
    csv.loc[12, "label"] = "eggs"  # a class the model does not know: scored, not counted in the accuracy
    csv.loc[14, "text"] = MOJIBAKE
    raw = csv.to_csv(index=False).encode().replace(b"PLANTED-BYTES", b"caf\xe9 au lait")  # Latin-1, not UTF-8
    (folder / "a.csv.gz").write_bytes(gzip.compress(raw))
    parquet = sms.iloc[30:50].reset_index(drop=True)
    parquet.loc[3, "text"] = None
    parquet.loc[5, "text"] = ""
    parquet.to_parquet(folder / "b.parquet")
    lines = [json.dumps({"id": str(r.id), "label": r.label, "text": r.text}) for r in sms.iloc[50:70].itertuples()]
    lines[1] = json.dumps({"id": "n1", "label": "ham", "text": 42})
    lines[3] = json.dumps({"id": "n3", "label": "ham", "text": ["a", "list"]})
    lines[5] = json.dumps({"id": "n5", "label": "ham"})  # no text at all
    lines.insert(10, "")  # a blank line: records keep their line numbers
    (folder / "c.jsonl").write_text("\n".join(lines) + "\n")
    ids = sms["id"].astype(str)
    return {
        ("a.csv.gz", 3, ids[2]): "missing text", ("a.csv.gz", 5, ids[4]): "empty text (nothing but whitespace)",
        ("a.csv.gz", 7, ids[6]): "not valid UTF-8 (the file holds bytes that are not); re-export the file as UTF-8",
        ("a.csv.gz", 9, ids[8]): "control characters (other than tab and newline)",
        ("b.parquet", 4, ids[33]): "missing text",
        ("b.parquet", 6, ids[35]): "empty text (nothing but whitespace)",
        ("c.jsonl", 2, "n1"): "not a string (a number, list or object is not a text)",
        ("c.jsonl", 4, "n3"): "not a string (a number, list or object is not a text)",
        ("c.jsonl", 6, "n5"): "missing text",
    }


def test_keel_predict_scores_csv_parquet_and_jsonl_texts_with_per_row_errors(tmp_path, sms, text_model):
    expected = landing(tmp_path / "landing", sms)
    out = tmp_path / "scored" / "texts.parquet"
    args = ["predict", "--model", text_model["name"], "--input", str(tmp_path / "landing"), "--output", str(out)]
    code, printed, said = keel(*args)
    assert code == 1, said[-3000:]  # some rows rejected
    assert "61 rows scored, 9 rejected, from 3 file(s)" in printed and "accuracy" in printed

    errors = pd.read_parquet(tmp_path / "scored" / "texts.errors.parquet")
    got = {(f.rsplit("/", 1)[-1], r, i): reason for f, r, i, reason in
           zip(errors["input_file"], errors["row"], errors["id"], errors["reason"])}
    assert got == expected
    assert set(errors["column"]) == {"text"}
    assert "caf\\xe9 au lait" in errors["value"].tolist()  # the bad byte shown escaped, never written raw

    predictions = pd.read_parquet(out)
    assert len(predictions) == 61 and predictions.groupby("input_file").size().to_dict() == {
        str(tmp_path / "landing" / name): n for name, n in (("a.csv.gz", 26), ("b.parquet", 18), ("c.jsonl", 17))}
    jsonl = predictions[predictions["input_file"].str.endswith("c.jsonl")]
    assert jsonl["row"].max() == 21 and 11 not in jsonl["row"].tolist()  # line numbers, the blank line skipped
    long = predictions[predictions["id"] == str(sms["id"][10])]
    assert long["notes"].str.match(rf"^truncated: \d+ tokens > max_length {MAX_LENGTH}$").all() and len(long) == 1
    repaired = predictions[predictions["id"] == str(sms["id"][14])]  # mojibake: scored as ftfy repairs it, and noted
    assert repaired["notes"].tolist() == ["repaired mojibake (ftfy)"]
    assert (predictions["notes"] != "").sum() >= 1 and set(predictions["class_name"]) <= {"ham", "spam"}
    provenance = {"model_name", "model_version", "model_run_id", "input_file", "input_sha256", "scored_at"}
    assert provenance | {"true_label", "true_class", "notes"} <= set(predictions)
    assert (predictions["model_name"] == text_model["name"]).all() and (predictions["model_version"] == "1").all()
    csv_rows = predictions[predictions["input_file"].str.endswith("a.csv.gz")]
    assert set(csv_rows["input_sha256"]) == {hashlib.sha256((tmp_path / "landing" / "a.csv.gz").read_bytes()).hexdigest()}

    manifest = json.loads((tmp_path / "scored" / "texts.manifest.json").read_text())
    known = predictions[predictions["true_class"] != "eggs"]
    assert (known["true_label"] == known["true_class"].map({"ham": 0, "spam": 1})).all()
    assert manifest["summary"]["labelled_rows"] == 60  # every scored row but the unknown class
    assert manifest["summary"]["accuracy"] == pytest.approx((known["predicted_label"] == known["true_label"]).mean())

    stamp = out.stat().st_mtime_ns
    code, printed, _ = keel(*args)
    assert code == 1 and "reused existing output" in printed and out.stat().st_mtime_ns == stamp


def test_a_text_file_without_labels_scores_to_csv(tmp_path, sms, text_model):
    source = tmp_path / "incoming.jsonl.gz"
    source.write_bytes(gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in sms["text"][:12]).encode()))
    out = tmp_path / "scored.csv"
    code, printed, said = keel("predict", "--model", f"{text_model['name']}@champion", "--input", str(source),
                               "--output", str(out))
    assert code == 0, said[-3000:]
    predictions = pd.read_csv(out)
    assert predictions["row"].tolist() == list(range(1, 13)) and predictions["id"].tolist() == list(range(1, 13))
    assert "true_label" not in predictions
    assert predictions["notes"].fillna("").str.fullmatch(rf"(truncated: \d+ tokens > max_length {MAX_LENGTH})?").all()
    assert "12 rows scored, 0 rejected" in printed


def test_a_text_file_without_the_text_column_exits_2_naming_it(tmp_path, sms, text_model):
    source = tmp_path / "wrong.csv"
    sms.rename(columns={"text": "message"}).head(5).to_csv(source, index=False)
    code, _, said = keel("predict", "--model", text_model["name"], "--input", str(source), "--output",
                         str(tmp_path / "p.parquet"))
    assert code == 2 and "Traceback" not in said, said[-3000:]
    assert said.strip().splitlines()[-1] == (f"keel predict: {source}: no text column 'text' (its columns: id, label, "
                                             "message); the model reads its texts from column 'text': rename the "
                                             "file's text column to that")
    assert not (tmp_path / "p.parquet").exists()
