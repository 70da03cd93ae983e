"""The hostile-input probe, kept as a table: each bad input a careless user (or an attacker)
gave `keel`, run through the real command in-process (real flows, the session's Prefect
harness, a real MLflow store), and what must hold for every one of them:

- the exit code the command promises (2: a bad command or unreadable input; 0/1 otherwise);
- one sentence from Keel naming the file or column, and no traceback on the console;
- nothing retried (a user's mistake is not an outage);
- every file the user owned before the command is byte for byte as it was, and no temporary
  file is left behind.

Cases that need processes, servers or a registry are tested where they live:
tests/unit/test_cli_process.py (kill -9), tests/flows/test_training_flow.py (racing trainings),
tests/unit/test_imagefolder.py (links, odd names), tests/unit/test_registry.py (tampered
registry), tests/integration/test_team_stack.py (auth), tests/flows/test_secrets.py (passwords).
"""

from __future__ import annotations

import gzip
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

from cli.main import main
from tests.console import console
from flows.prefect_api import free_port
from tests.incoming_data import REPO, clean_batch

SIGN_MNIST = str(REPO / "conf" / "datasets" / "sign-mnist.yaml")


@dataclass
class Probe:
    build: Callable[[Path, str], list[str]]  # (user's folder, model name) -> argv
    exit_code: int
    says: str  # a regex the command's last words must match
    output_expected: str | None = None  # a file the command must write (relative to the user's folder)


def _rows() -> pd.DataFrame:
    return clean_batch()


def _predict(*extra: str) -> Callable[[Path, str], list[str]]:
    return lambda user, model: ["predict", "--model", model, *[a.format(user=user) for a in extra]]


def _validate(*extra: str) -> Callable[[Path, str], list[str]]:
    return lambda user, model: ["validate", "--dataset-config", SIGN_MNIST, *[a.format(user=user) for a in extra]]


def output_is_input(user: Path, model: str) -> list[str]:
    _rows().to_csv(user / "same.csv", index=False)
    return _predict("--input", "{user}/same.csv", "--output", "{user}/same.csv")(user, model)


def report_folder_not_keels(user: Path, model: str) -> list[str]:
    _rows().to_csv(user / "batch.csv", index=False)
    (user / "thesis").mkdir()
    (user / "thesis" / "chapter1.tex").write_text("\\chapter{Years of work}\n")
    return _validate("--input", "{user}/batch.csv", "--report", "{user}/thesis")(user, model)


def format_contradicts_extension(user: Path, model: str) -> list[str]:
    _rows().to_csv(user / "batch.csv", index=False)
    return _predict("--input", "{user}/batch.csv", "--format", "csv", "--output", "{user}/p.parquet")(user, model)


def output_exists_and_is_not_keels(user: Path, model: str) -> list[str]:
    _rows().to_csv(user / "batch.csv", index=False)
    (user / "preds.parquet").write_bytes(b"PAR1 somebody else's predictions PAR1")
    return _predict("--input", "{user}/batch.csv", "--output", "{user}/preds.parquet")(user, model)


def header_only(user: Path, model: str) -> list[str]:
    _rows().head(0).to_csv(user / "header.csv", index=False)
    return _predict("--input", "{user}/header.csv", "--output", "{user}/out/preds.parquet")(user, model)


def byte_order_mark(user: Path, model: str) -> list[str]:
    (user / "bom.csv").write_bytes(b"\xef\xbb\xbf" + _rows().to_csv(index=False).encode())
    return _validate("--input", "{user}/bom.csv", "--report", "{user}/report")(user, model)


def duplicated_header(user: Path, model: str) -> list[str]:
    rows = _rows()
    text = rows.to_csv(index=False).replace("pixel6,", "pixel5,", 1)
    (user / "dup.csv").write_text(text)
    return _validate("--input", "{user}/dup.csv", "--report", "{user}/report")(user, model)


def idx_255_dimensions(user: Path, model: str) -> list[str]:
    images = struct.pack(">HBB", 0, 0x08, 255) + struct.pack(">I", 60) + bytes(60 * 784)
    labels = struct.pack(">HBB", 0, 0x08, 1) + struct.pack(">I", 60) + bytes(60)
    (user / "images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
    (user / "labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    return _validate("--input", "{user}/images-idx3-ubyte.gz", "--labels", "{user}/labels-idx1-ubyte.gz",
                     "--report", "{user}/report")(user, model)


def refused_connection(user: Path, model: str) -> list[str]:
    return _validate("--input", f"http://127.0.0.1:{free_port()}/landing/batch.csv", "--report", "{user}/report")(user, model)


def missing_drive(user: Path, model: str) -> list[str]:
    _rows().to_csv(user / "batch.csv", index=False)
    return _predict("--input", "{user}/batch.csv", "--output", f"/mnt/keel-unplugged-{os.getpid()}/daily/p.parquet")(
        user, model)


def training_value_out_of_range(user: Path, model: str) -> list[str]:
    from tests.conftest import write_dataset_config

    _rows().to_csv(user / "rows.csv", index=False)
    config = write_dataset_config(user, user / "rows.csv", training={"epochs": 0})
    return ["train", "--dataset-config", str(config)]


def missing_input(user: Path, model: str) -> list[str]:
    return _predict("--input", "{user}/no-such.csv", "--output", "{user}/p.parquet")(user, model)


PROBES = {
    "predict: output is the input": Probe(output_is_input, 2, r"same\.csv: the output is the input file"),
    "validate: --report names a folder Keel did not write": Probe(report_folder_not_keels, 2, r"thesis.*not a Keel report|thesis"),
    "predict: --format csv into a .parquet name": Probe(format_contradicts_extension, 2, r"p\.parquet"),
    "predict: --output is a user's file": Probe(output_exists_and_is_not_keels, 2, r"preds\.parquet: exists and was not written by Keel"),
    "predict: header-only CSV": Probe(header_only, 0, r"0 rows scored", output_expected="out/preds.parquet"),
    "validate: UTF-8 byte-order mark": Probe(byte_order_mark, 0, r"bom\.csv \(\d+ rows\) ACCEPTED", output_expected="report/report.json"),
    "validate: duplicated header column": Probe(duplicated_header, 2, r"dup\.csv: the header repeats column 'pixel5'"),
    "validate: IDX header claiming 255 dimensions": Probe(idx_255_dimensions, 2, r"images-idx3-ubyte\.gz: the IDX header says 255 dimensions"),
    "validate: dataset URL on a host that refuses connections": Probe(refused_connection, 2, r"connection refused by 127\.0\.0\.1:\d+"),
    "predict: output on a missing drive": Probe(missing_drive, 2, r"keel-unplugged-\d+: does not exist, .*is the drive mounted"),
    "predict: input that does not exist": Probe(missing_input, 2, r"no-such\.csv"),
    "train: a training value out of range in the dataset YAML": Probe(
        training_value_out_of_range, 2, r"invalid option training\.epochs in .*sign-mnist-small\.yaml: "),
}


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("name", PROBES)
def test_a_hostile_input_gets_one_sentence_its_exit_code_and_changes_nothing(name, tmp_path, keel_home,
                                                                                registered_model_name):
    probe = PROBES[name]
    user = tmp_path / "user"
    user.mkdir()
    argv = probe.build(user, registered_model_name)
    before = _snapshot(user)
    with console() as (stdout, stderr):
        code = main(argv)
    out, err = stdout.getvalue(), stderr.getvalue()
    said = out + err
    assert code == probe.exit_code, f"{name}: exit {code}\n{said[-3000:]}"
    assert "Traceback" not in said, f"{name}: a traceback reached the console\n{said[-3000:]}"
    assert "AwaitingRetry" not in said and "Retrying" not in said, f"{name}: retried\n{said[-3000:]}"
    last_words = (err if code == 2 else out).strip()
    assert re.search(probe.says, last_words), f"{name}: {last_words[-1500:]}"
    if code == 2:
        assert last_words.splitlines()[-1].startswith(f"keel {argv[0]}: "), last_words[-500:]
    after = _snapshot(user)
    for path, content in before.items():  # the user's files and folders, byte for byte
        assert after.get(path, "gone") == content, f"{name}: {path} changed"
    new = set(after) - set(before)
    if probe.output_expected:
        assert probe.output_expected in new, f"{name}: {probe.output_expected} not written"
    else:
        assert not new, f"{name}: wrote {sorted(new)}"
    assert not [p for p in tmp_path.rglob("*.tmp")], f"{name}: a temporary file was left behind"


def test_a_header_only_file_still_writes_the_full_schema(tmp_path, keel_home, registered_model_name, small_rows):
    user = tmp_path / "user"
    user.mkdir()
    small_rows.head(0).to_csv(user / "header.csv", index=False)
    small_rows.head(20).to_csv(user / "rows.csv", index=False)
    assert main(["predict", "--model", registered_model_name, "--input", str(user / "header.csv"),
                 "--output", str(user / "empty.parquet")]) == 0
    assert main(["predict", "--model", registered_model_name, "--input", str(user / "rows.csv"),
                 "--output", str(user / "full.parquet")]) == 0
    empty, full = (pd.read_parquet(user / f"{n}.parquet") for n in ("empty", "full"))
    assert len(empty) == 0 and len(full) == 20
    assert dict(empty.dtypes) == dict(full.dtypes)


@pytest.fixture
def registered_model_name(registered_model, keel_home, monkeypatch):
    """The session's registered model, in its own store (the probe's files go elsewhere)."""
    monkeypatch.setenv("KEEL_HOME", str(registered_model["home"]))
    return registered_model["registered"].name
