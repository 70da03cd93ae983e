"""Validating incoming batches: suite, quarantine, drift and anomaly scores, then curation.

`validate_batch` reads one landed file (CSV, gzip or not; parquet; IDX with an optional
labels file; a text dataset's CSV, parquet or JSONL: keel.validation.text_batch), checks it with the dataset's suite and writes, into one report folder that
appears whole (built beside it, then renamed):

- ``report.json`` / ``report.md``: verdict, reasons, every failed expectation, drift figures;
- ``docs/index.html``: Great Expectations Data Docs of the four tables;
- ``quarantine.csv``: one row per problem (row, line, id, column, value, expectation, rule);
- ``quarantined_rows.csv``: the quarantined rows as they were read, to fix and send again
  (texts: ``quarantined_rows.jsonl``, which keeps a non-string value what it was);
- ``clean.parquet``: the rows that passed, only when the batch is accepted;
- ``anomalies.png``: the images with the highest anomaly scores;
- ``.keel-report``: the marker that says Keel wrote the folder: an existing folder is replaced
  only when it is such a report (or empty); any other is refused, never deleted.

The input file is never modified. `curate_batch` adds an accepted batch's clean rows to the
dataset's curated training data, which the next ingest folds into a new dataset version.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from keel.core.atomic import atomic_path, folder_lock
from keel.core.config import DatasetConfig
from keel.core.errors import ConfigError, DatasetError, KeelError
from keel.core.io import decompress, read_bytes, sha256_hex
from keel.data.curated import curated_manifest
from keel.data.idx import parse_idx_array, parse_idx_pair
from keel.data.landing import default_report_dir
from keel.data.profile import ParsedTable
from keel.data.tables import parse_pixel_csv, parse_pixel_parquet
from keel.modalities import ingest, modality_for
from keel.modalities.text import TEXT
from keel.models.anomaly import load_autoencoder, reconstruction_errors
from keel.validation.checks import class_table, run_suites, schema_table
from keel.validation.drift import drift_table
from keel.validation.quarantine import Judgement, judge
from keel.validation.report import REJECTED, BatchResult
from keel.validation.report_files import write_report
from keel.validation.report_folder import building_report, check_report_dir
from keel.validation.suite import Suite, load_suite
from keel.validation.text_batch import validate_text_batch
from keel.validation.text_rows import curated_text_columns


def read_batch(config: DatasetConfig, input_path: str, labels_path: str | None, id_column: str | None) -> tuple[ParsedTable, str, str]:
    """(parsed rows, input sha256, format) of one landed file; unreadable files raise DatasetError."""
    if "://" not in input_path and not Path(input_path).is_file():
        raise DatasetError(f"{input_path}: no such file; check --input (a CSV, parquet or IDX file)")
    data = read_bytes(input_path)
    sha = sha256_hex(data)
    text = decompress(input_path, data)
    if text[:4] == b"PAR1":
        return parse_pixel_parquet(input_path, text, config, "incoming", id_column), sha, "parquet"
    # IDX by its magic: two zero bytes (no CSV starts so), then the element type; the parser
    # names what is wrong with a header that cannot describe the file.
    if len(text) >= 4 and text[:2] == b"\x00\x00":
        images = parse_idx_array(input_path, text)
        if labels_path:
            labels = parse_idx_array(labels_path, decompress(labels_path, read_bytes(labels_path)))
            return parse_idx_pair(input_path, images, labels, labels_path, config, "incoming"), sha, "idx"
        parsed = parse_idx_pair(input_path, images, np.zeros(len(images), dtype=np.int64), input_path, config, "incoming")
        parsed.profile["label"] = None
        parsed.header = [c for c in parsed.header if c != config.label_column]
        parsed.labels = pd.Series([None] * len(images), dtype=object)
        return parsed, sha, "idx"
    return parse_pixel_csv(input_path, text, config, "incoming", id_column), sha, "csv"


@dataclass
class _Tables:
    """The tables the suites check in one batch (schema, rows, classes, drift), what they can
    check (`available`: labels, ids, anomaly scores), and the figures computed on the way."""

    tables: dict[str, pd.DataFrame]
    available: set[str]
    profile: pd.DataFrame
    schema_ok: bool
    labelled: bool
    classes: pd.DataFrame | None = None
    drift: list[dict] = field(default_factory=list)
    anomaly: dict = field(default_factory=dict)


def _tables(config: DatasetConfig, parsed: ParsedTable, suite: Suite, id_column: str | None) -> _Tables:
    """The schema table always; the rows, classes and drift tables when the columns are right."""
    header = parsed.header
    schema = schema_table(header, config, id_column, parsed.kinds)
    schema_ok = (len(header) > 0 and set(config.pixel_columns) <= set(header)
                 and not (schema["role"] == "unexpected").any() and not schema["column"].duplicated().any())
    labelled = config.label_column in header
    available = {"labels"} if labelled else set()
    if id_column and id_column in header:
        available.add("ids")
    checked = _Tables({"schema": schema}, available, parsed.profile, schema_ok, labelled)
    if schema_ok:
        _row_tables(checked, config, parsed, suite)
    return checked


def _row_tables(checked: _Tables, config: DatasetConfig, parsed: ParsedTable, suite: Suite) -> None:
    """Adds the rows (with anomaly scores when the suite has an autoencoder), classes and drift tables."""
    profile = checked.profile.copy()
    profile["label"] = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in profile["label"]]
    if suite.anomaly is not None and parsed.pixels is not None:
        model = load_autoencoder(suite.anomaly_weights(), suite.anomaly.get("sha256"))
        scores = reconstruction_errors(model, parsed.pixels)
        profile["anomaly_score"] = scores
        checked.available.add("anomaly_score")
        threshold = suite.anomaly["threshold"]
        checked.anomaly = {"threshold": threshold, "flagged": int((scores > threshold).sum()),
                           "max": float(scores.max()) if len(scores) else 0.0}
    checked.profile = checked.tables["rows"] = profile
    if checked.labelled:
        checked.classes = checked.tables["classes"] = class_table(profile["label"], config, suite.classes)
    if suite.drift is not None and len(profile):
        counts = checked.classes["rows"].to_numpy() if checked.classes is not None else None
        drift = checked.tables["drift"] = drift_table(profile, counts, suite.drift)
        checked.drift = [{k: (bool(v) if k == "drifted" else v) for k, v in row.items()} for row in drift.to_dict("records")]


def validate_batch(config: DatasetConfig, input_path: str, report_dir: str | Path | None = None,
                   labels_path: str | None = None, id_column: str | None = "id", suite: Suite | None = None) -> BatchResult:
    """Validates one landed file; writes the report folder; never modifies the input. A text
    dataset's batches go through keel.validation.text_batch (`labels_path` is for IDX only)."""
    if modality_for(config) is TEXT:
        if labels_path:
            raise ConfigError(f"--labels {labels_path}: a labels file goes with IDX images; a file of texts carries "
                              f"its labels in its {config.label_column} column")
        return validate_text_batch(config, input_path, report_dir, id_column, suite)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if report_dir:
        check_report_dir(Path(report_dir))  # before any work
    suite = suite or load_suite(config)
    parsed, sha, _ = read_batch(config, input_path, labels_path, id_column)
    final = Path(report_dir) if report_dir else default_report_dir(config, input_path, sha)
    if not report_dir:
        check_report_dir(final)  # before the checks
    timings["read"] = time.perf_counter() - started
    tick = time.perf_counter()
    checked = _tables(config, parsed, suite, id_column)
    timings["prepare"] = time.perf_counter() - tick

    with building_report(final) as staged:
        run = run_suites(checked.tables, {t: suite.expectations(t, checked.available) for t in checked.tables},
                         f"{config.name}-{sha[:12]}", staged / "docs")
        timings["gx"] = run.seconds
        tick = time.perf_counter()
        judged = judge(run, parsed, checked.profile, checked.classes, config, checked.schema_ok)
        timings["quarantine"] = time.perf_counter() - tick
        timings["checks"] = timings["read"] + timings["prepare"] + timings["gx"] + timings["quarantine"]
        result = _result(config, str(input_path), sha, suite, parsed, checked, judged, timings, final)
        write_report(staged, final, result, parsed, checked.profile, judged, config, id_column)
    return result


def _result(config: DatasetConfig, input_path: str, sha: str, suite: Suite, parsed: ParsedTable, checked: _Tables,
            judged: Judgement, timings: dict[str, float], final: Path) -> BatchResult:
    quarantined = len(judged.quarantined) + len(parsed.skipped)
    return BatchResult(
        dataset=config.name, input=input_path, input_sha256=sha, suite=suite.name,
        rows=len(checked.profile) + len(parsed.skipped), labelled=checked.labelled, verdict=judged.verdict,
        reasons=judged.reasons, quarantined_rows=quarantined,
        clean_rows=len(judged.clean) if judged.verdict != REJECTED else 0, problems=judged.problems,
        failures=judged.failures, drift=checked.drift, anomaly=checked.anomaly, seconds=timings, report_dir=str(final),
        unparsed_lines=[{k: v for k, v in item.items() if k != "text"} for item in parsed.skipped])


def curate_batch(config: DatasetConfig, report_dir: str | Path) -> dict:
    """Adds an accepted batch's clean rows to the dataset's curated training data and ingests
    the new dataset version (content-hashed; the validation result goes into its meta.json)."""
    report_dir = Path(report_dir)
    try:
        report = json.loads((report_dir / "report.json").read_text())
    except FileNotFoundError:
        raise KeelError(f"{report_dir}: no report.json; validate the batch first with `keel validate`") from None
    if report["verdict"] == REJECTED:
        raise KeelError(f"{report['input']} was rejected ({'; '.join(report['reasons'])}); a rejected batch cannot join the training data")
    if not report["labelled"]:
        raise KeelError(f"{report['input']} has no labels; only labelled batches can join the training data")
    columns = curated_text_columns(config) if modality_for(config) is TEXT else config.expected_columns
    clean = pq.read_table(report_dir / "clean.parquet").select(columns)
    sink = pa.BufferOutputStream()
    pq.write_table(clean, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    sha = sha256_hex(data)
    manifest_path = curated_manifest(config.name)
    added = False
    with folder_lock(manifest_path.parent):
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"dataset": config.name, "batches": []}
        if not any(b["sha256"] == sha for b in manifest["batches"]):
            name = f"{sha[:16]}.parquet"
            with atomic_path(manifest_path.parent / name) as tmp:
                tmp.write_bytes(data)
            manifest["batches"].append({
                "file": name, "sha256": sha, "rows": clean.num_rows, "input": report["input"],
                "input_sha256": report["input_sha256"], "added": dt.datetime.now(dt.timezone.utc).isoformat(),
                "validation": {k: report[k] for k in ("verdict", "rows", "quarantined_rows", "clean_rows", "suite")}
                | {"report": str(report_dir), "failed_expectations": [f["rule"] for f in report["failures"]]},
            })
            with atomic_path(manifest_path) as tmp:
                tmp.write_text(json.dumps(manifest, indent=2))
            added = True
    try:
        version = ingest(config).version
    except DatasetError as exc:
        raise KeelError(f"the curated data could not be ingested: {exc}") from None
    return {"dataset": config.name, "version": version.id, "version_dir": str(version.path), "rows": version.meta["rows"],
            "added": added, "batches": len(version.meta["curated_batches"])}
