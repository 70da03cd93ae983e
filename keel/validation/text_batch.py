"""Validating a batch of texts (a text dataset's landed CSV, parquet or JSONL file): the same
report folder, verdicts and exit codes as for pixel rows (keel.validation.incoming), with the
checks of keel.validation.text_suite on a per-record profile (keel.validation.text_rows) and
text drift (keel.validation.text_drift).

The reference is the dataset version the suite was inferred from (when it is stored; else the
config's current version, ingested or reused): its tokenizer counts the batch's tokens and
out-of-vocabulary words, and its stored texts are what a batch text must not copy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from keel.core import settings
from keel.core.config import DatasetConfig
from keel.core.errors import DatasetError
from keel.core.io import read_bytes, sha256_hex
from keel.data.landing import default_report_dir
from keel.data.text_table import TextRows, read_text_file
from keel.data.tokenizer import load_tokenizer
from keel.data.versions import DatasetVersion
from keel.modalities import ingest
from keel.validation.checks import class_table, failures_of, run_suites
from keel.validation.drift import drift_table
from keel.validation.quarantine import decide
from keel.validation.report import REJECTED, BatchResult
from keel.validation.report_folder import building_report, check_report_dir
from keel.validation.suite import Suite, load_suite, suite_path
from keel.validation.text_drift import (drivers_sentence, moved_classes, nearest_classes, oov_counts, oov_test,
                                        over_represented_words, shift_test, text_drift_rows, two_sample_tokens)
from keel.validation.text_embed import embed_texts, load_reference
from keel.validation.text_rows import text_batch_profile, text_quarantine, write_text_report
from keel.validation.text_suite import text_schema_table, text_suite

MIN_SHIFT_ROWS = 20  # fewer usable texts: no embedding shift test (it could not be significant)


def reference_version(config: DatasetConfig, suite: Suite | None) -> DatasetVersion:
    """The version the suite was inferred from when it is stored, else the config's current one."""
    version = ((suite.doc.get("reference") or {}).get("version")) if suite else None
    path = settings.versions_dir() / config.name / version if version else None
    if path is not None and (path / "meta.json").exists():
        return DatasetVersion(path)
    return ingest(config).version


@dataclass
class _Checked:
    """The tables the suites check (schema, rows, classes, drift), what they can check, and the figures."""

    tables: dict[str, pd.DataFrame]
    available: set[str]
    profile: pd.DataFrame
    labelled: bool
    classes: pd.DataFrame | None = None
    drift: list[dict] = field(default_factory=list)
    drivers: dict = field(default_factory=dict)


def _drift(config: DatasetConfig, suite: Suite, profile: pd.DataFrame, texts: list[str], class_counts: np.ndarray | None,
           tokenizer) -> tuple[pd.DataFrame, dict]:
    """The drift table (labels, token lengths, OOV rate, embedding shift, each with what drives
    it) and the drivers: classes whose shares moved most, words most over-represented."""
    doc, meta = suite.drift, suite.doc["text_reference"]
    table = drift_table(profile, class_counts, doc)
    two_sample_tokens(table, len(texts), (doc.get("unseen_rows") or {}).get("rows"))
    oov = oov_test(*oov_counts(tokenizer, texts), doc["oov"]["reference_rate"], doc["oov"]["max_increase"])
    reference = load_reference(suite.path.parent / meta["file"], meta["sha256"])
    by_labels = class_counts is not None and class_counts.sum() > 0
    shift, shares = None, (class_counts / class_counts.sum() if by_labels else None)
    if len(texts) >= MIN_SHIFT_ROWS:
        test = doc["embedding"]
        rng = np.random.default_rng(test["seed"])
        sample = np.sort(rng.choice(len(texts), size=min(test["max_rows"], len(texts)), replace=False))
        embeddings = embed_texts([texts[i] for i in sample])
        shift = shift_test(reference["embeddings"], embeddings, test["folds"], test["seed"])
        if shares is None:
            nearest = nearest_classes(reference["embeddings"], reference["labels"], embeddings)
            shares = np.bincount(nearest, minlength=len(config.labels)) / len(nearest)
    classes = moved_classes(shares, np.asarray(doc["reference_class_shares"]), config.class_names) if shares is not None else []
    words = over_represented_words(texts, reference["words"], meta["training_texts"])
    table["drivers"] = [drivers_sentence(classes, [], False) if check == "label distribution" else
                        _median_sentence(profile, doc) if check == "tokens" else "" for check in table["check"]]
    extra = text_drift_rows(shift, oov, doc, drivers_sentence(classes, words, not by_labels))
    drivers = {"classes": classes, "words": words, "classes_by": "labels" if by_labels else "nearest reference text"}
    return pd.concat([table, extra], ignore_index=True), drivers


def _median_sentence(profile: pd.DataFrame, doc: dict) -> str:
    """The token-length row's drivers: the median length of the reference's unseen texts and of the batch's."""
    quantiles = doc["reference_quantiles"]["tokens"]
    return f"median length {quantiles[len(quantiles) // 2]:g} -> {float(profile['tokens'].median()):g} tokens"


def _checked(config: DatasetConfig, rows: TextRows, suite: Suite, version: DatasetVersion, raw_classes: dict,
             id_column: str | None) -> _Checked:
    """The schema, rows and (when labelled) classes tables, and drift when the suite has a reference."""
    tokenizer = load_tokenizer(version.tokenizer_path)
    profile = text_batch_profile(config, rows, version, tokenizer, raw_classes)
    labelled = rows.labels is not None
    available = {"labels"} if labelled else set()
    if id_column and id_column in rows.columns:
        available.add("ids")
    checked = _Checked({"schema": text_schema_table(rows.columns, config, id_column), "rows": profile},
                       available, profile, labelled)
    if labelled:
        checked.classes = checked.tables["classes"] = class_table(profile["class"], config, suite.classes)
    good = np.flatnonzero(profile["tokens"].notna().to_numpy())
    if suite.drift is not None and len(good):
        counts = checked.classes["rows"].to_numpy() if checked.classes is not None else None
        table, checked.drivers = _drift(config, suite, profile, [rows.texts[i] for i in good], counts, tokenizer)
        checked.tables["drift"] = table
        checked.drift = [{k: (bool(v) if k == "drifted" else v) for k, v in r.items()} for r in table.to_dict("records")]
    return checked


def _read(config: DatasetConfig, input_path: str, id_column: str | None) -> tuple[TextRows, str]:
    """(the file's records, its sha256); a missing or unreadable file is a DatasetError."""
    if "://" not in input_path and not Path(input_path).is_file():
        raise DatasetError(f"{input_path}: no such file; check --input (a CSV, parquet or JSONL file of texts)")
    data = read_bytes(input_path)
    rows = read_text_file(input_path, config.model_copy(update={"id_column": id_column}), data, require_labels=False)
    return rows, sha256_hex(data)


def validate_text_batch(config: DatasetConfig, input_path: str, report_dir: str | Path | None = None,
                        id_column: str | None = "id", suite: Suite | None = None) -> BatchResult:
    """Validates one landed file of texts; writes the report folder; never modifies the input."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if report_dir:
        check_report_dir(Path(report_dir))  # before any work
    suite = suite or (load_suite(config) if suite_path(config) else None)
    version = reference_version(config, suite)
    raw_classes, config = config.classes, version.classes(config)
    suite = suite or Suite(text_suite(config), None)
    id_column = config.id_column or id_column
    rows, sha = _read(config, str(input_path), id_column)
    final = Path(report_dir) if report_dir else default_report_dir(config, str(input_path), sha)
    if not report_dir:
        check_report_dir(final)
    timings["read"] = time.perf_counter() - started
    tick = time.perf_counter()
    checked = _checked(config, rows, suite, version, raw_classes, id_column)
    timings["prepare"] = time.perf_counter() - tick
    with building_report(final) as staged:
        run = run_suites(checked.tables, {t: suite.expectations(t, checked.available) for t in checked.tables},
                         f"{config.name}-{sha[:12]}", staged / "docs")
        timings["gx"] = run.seconds
        tick = time.perf_counter()
        frame, quarantined = text_quarantine(run, rows, checked.profile, config, id_column)
        judged = decide(failures_of(run, rows.columns, checked.classes), frame, quarantined, len(rows), 0, config, True)
        timings["quarantine"] = time.perf_counter() - tick
        timings["checks"] = timings["read"] + timings["prepare"] + timings["gx"] + timings["quarantine"]
        result = BatchResult(
            dataset=config.name, input=str(input_path), input_sha256=sha, suite=suite.name, rows=len(rows),
            labelled=checked.labelled, verdict=judged.verdict, reasons=judged.reasons,
            quarantined_rows=len(judged.quarantined), clean_rows=len(judged.clean) if judged.verdict != REJECTED else 0,
            problems=judged.problems, failures=judged.failures, drift=checked.drift, anomaly={}, seconds=timings,
            report_dir=str(final), drift_drivers=checked.drivers)
        write_text_report(staged, final, result, rows, checked.profile, judged, config, id_column)
    return result
