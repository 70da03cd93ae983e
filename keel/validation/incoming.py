"""Validating incoming batches: suite, quarantine, drift and anomaly scores, then curation.

`validate_batch` reads one landed file (CSV, gzip or not; parquet; IDX with an optional
labels file; a text dataset's CSV, parquet or JSONL: keel.validation.text_batch), checks it with the dataset's suite and writes, into one report folder that
appears whole (built beside it, then renamed). A CSV or parquet file is read a chunk of rows at
a time (keel.data.pixel_stream): `first_pass` keeps each row's profile and anomaly score, never
its pixels, and keel.validation.report_files reads again only what the report shows as read.
The folder holds:

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
import logging
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
from keel.core.memory import return_freed_memory
from keel.core.prefetch import prefetched
from keel.data.curated import curated_manifest
from keel.data.idx import parse_idx_array, parse_idx_pair
from keel.data.landing import default_report_dir
from keel.data.pixel_stream import BATCH_ROWS, PLAIN, PixelRows, Reading, Signatures, WholeRows, open_pixel_rows
from keel.data.profile import ParsedTable
from keel.data.tables import parse_pixel_csv, parse_pixel_parquet
from keel.modalities import ingest, modality_for
from keel.modalities.text import TEXT
from keel.models.anomaly import StreamingErrors, load_autoencoder
from keel.validation.checks import class_table, run_suites, schema_table
from keel.validation.drift import drift_table
from keel.validation.quarantine import Judgement, judge
from keel.validation.report import REJECTED, BatchResult
from keel.validation.report_files import PixelSpill, write_report
from keel.validation.report_folder import building_report, check_report_dir
from keel.validation.suite import Suite, load_suite
from keel.validation.text_batch import validate_text_batch
from keel.validation.text_rows import curated_text_columns

PROGRESS_SECONDS = 10.0  # a long first pass says how far it is at most this often ("keel.validation" logger)
_LOG = logging.getLogger("keel.validation")


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
class Profiled:
    """A pixel-row batch as the first pass read it: what the suites check, never its pixels."""

    header: list[str]
    profile: pd.DataFrame  # one row per row read (keel.data.profile), labels as text
    skipped: list[dict]  # lines that could not be parsed
    kinds: dict[str, str]  # pixel columns that do not read as integers: their kind
    images: bool  # the columns form the configured image (clean rows and anomaly scores need it)
    scores: np.ndarray | None  # anomaly scores (the suite's autoencoder), when the rows form images
    reading: Reading  # how the chunks were parsed: the second pass parses them so again


def pixel_rows(config: DatasetConfig, input_path: str, labels_path: str | None, id_column: str | None,
               batch_rows: int = BATCH_ROWS) -> PixelRows:
    """The landed file's rows, chunk by chunk (CSV, parquet) or whole (IDX, gzipped parquet)."""
    if "://" not in input_path and not Path(input_path).is_file():
        raise DatasetError(f"{input_path}: no such file; check --input (a CSV, parquet or IDX file)")
    source = open_pixel_rows(input_path, config, id_column, batch_rows)
    if source is None:
        parsed, sha, fmt = read_batch(config, input_path, labels_path, id_column)
        source = WholeRows(input_path, parsed, sha, fmt)
    return source


def first_pass(config: DatasetConfig, source: PixelRows, suite: Suite, id_column: str | None, spill: PixelSpill) -> Profiled:
    """Every chunk profiled, scored by the suite's autoencoder and its pixels spilled (for the
    clean rows); once more with the whole file's column types when its chunks read them
    differently (keel.data.pixel_stream), so that every figure is the whole file's."""
    signatures = Signatures(config, id_column)
    batch = _profile_chunks(source, suite, spill, PLAIN, signatures)
    reading = signatures.whole_file()
    return batch if reading is None else _profile_chunks(source, suite, spill, reading, None)


def _profile_chunks(source: PixelRows, suite: Suite, spill: PixelSpill, reading: Reading,
                    signatures: Signatures | None) -> Profiled:
    parts, skipped, kinds, labels = [], [], {}, {}
    header, scorer, images = None, None, False
    spill.remove()
    rows, started = 0, time.perf_counter()
    shown = started
    for parsed in prefetched(source.chunks(reading)):
        if signatures is not None:
            signatures.add(parsed)
        header = parsed.header if header is None else header
        kinds.update(parsed.kinds)
        skipped += parsed.skipped
        parsed.profile["label"] = _label_texts(parsed.profile["label"], labels)
        if parsed.pixels is not None:
            images = True
            if scorer is None and suite.anomaly is not None:
                scorer = StreamingErrors(load_autoencoder(suite.anomaly_weights(), suite.anomaly.get("sha256")))
            if scorer is not None:
                scorer.add(parsed.pixels)
            spill.add(parsed.pixels)
        # Each column on its own (a copy: a chunk's few KB), so that _concat_profiles frees each as it goes.
        parts.append(pd.DataFrame({c: parsed.profile[c].to_numpy().copy() for c in parsed.profile.columns}, copy=False))
        if len(parts) % 16 == 0:
            return_freed_memory(trim=True)
        rows += len(parsed.profile)
        if time.perf_counter() - shown >= PROGRESS_SECONDS:
            shown = time.perf_counter()
            _LOG.info("validation: read %s rows in %.0f s, %s rows/s", f"{rows:,}", shown - started,
                      f"{rows / (shown - started):,.0f}")
    spill.close()
    return Profiled(header or [], _concat_profiles(parts), skipped, kinds, images,
                    scorer.finish() if scorer is not None else None, reading)


def _label_texts(labels: pd.Series, seen: dict) -> list:
    """Labels as the rows table checks them: text, None when missing (one string object per
    distinct label: a million rows hold 24 labels, not a million strings)."""
    out = []
    for value in labels.tolist():
        if value is None or (isinstance(value, float) and value != value):
            out.append(None)
            continue
        key = (type(value), value)
        text = seen.get(key)
        if text is None:
            text = seen[key] = str(value)
        out.append(text)
    return out


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


def _tables(config: DatasetConfig, batch: Profiled, suite: Suite, id_column: str | None) -> _Tables:
    """The schema table always; the rows, classes and drift tables when the columns are right."""
    header = batch.header
    schema = schema_table(header, config, id_column, batch.kinds)
    schema_ok = (len(header) > 0 and set(config.pixel_columns) <= set(header)
                 and not (schema["role"] == "unexpected").any() and not schema["column"].duplicated().any())
    labelled = config.label_column in header
    available = {"labels"} if labelled else set()
    if id_column and id_column in header:
        available.add("ids")
    checked = _Tables({"schema": schema}, available, batch.profile, schema_ok, labelled)
    if schema_ok:
        _row_tables(checked, config, batch, suite)
    return checked


def _row_tables(checked: _Tables, config: DatasetConfig, batch: Profiled, suite: Suite) -> None:
    """Adds the rows (with anomaly scores when the suite has an autoencoder), classes and drift tables."""
    profile = checked.profile
    if batch.scores is not None:
        scores = profile["anomaly_score"] = batch.scores
        checked.available.add("anomaly_score")
        threshold = suite.anomaly["threshold"]
        checked.anomaly = {"threshold": threshold, "flagged": int((scores > threshold).sum()),
                           "max": float(scores.max()) if len(scores) else 0.0}
    checked.tables["rows"] = profile
    if checked.labelled:
        checked.classes = checked.tables["classes"] = class_table(profile["label"], config, suite.classes)
    if suite.drift is not None and len(profile):
        counts = checked.classes["rows"].to_numpy() if checked.classes is not None else None
        drift = checked.tables["drift"] = drift_table(profile, counts, suite.drift)
        checked.drift = [{k: (bool(v) if k == "drifted" else v) for k, v in row.items()} for row in drift.to_dict("records")]


def validate_batch(config: DatasetConfig, input_path: str, report_dir: str | Path | None = None,
                   labels_path: str | None = None, id_column: str | None = "id", suite: Suite | None = None,
                   batch_rows: int = BATCH_ROWS) -> BatchResult:
    """Validates one landed file; writes the report folder; never modifies the input. A text
    dataset's batches go through keel.validation.text_batch (`labels_path` is for IDX only).
    A CSV or parquet file is read `batch_rows` rows at a time, twice at most (keel.data.pixel_stream)."""
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
    source = pixel_rows(config, input_path, labels_path, id_column, batch_rows)
    hashed = None if report_dir else source.sha256()
    final = Path(report_dir) if report_dir else default_report_dir(config, input_path, hashed)
    if not report_dir:
        check_report_dir(final)  # before the checks
    return_freed_memory()
    with building_report(final) as staged:
        spill = PixelSpill(staged / ".pixels.arrow")
        batch = first_pass(config, source, suite, id_column, spill)
        sha = source.sha256()
        if hashed is not None and sha != hashed:
            raise DatasetError(f"{input_path}: the file changed while it was being validated; validate it again once it is complete")
        timings["read"] = time.perf_counter() - started  # reading, profiles, anomaly scores: one pass
        tick = time.perf_counter()
        checked = _tables(config, batch, suite, id_column)
        timings["prepare"] = time.perf_counter() - tick
        return_freed_memory(trim=True)  # before Great Expectations' own peak
        run = run_suites(checked.tables, {t: suite.expectations(t, checked.available) for t in checked.tables},
                         f"{config.name}-{sha[:12]}", staged / "docs")
        timings["gx"] = run.seconds
        tick = time.perf_counter()
        judged = judge(run, batch, checked.profile, checked.classes, config, checked.schema_ok)
        timings["quarantine"] = time.perf_counter() - tick
        timings["checks"] = timings["read"] + timings["prepare"] + timings["gx"] + timings["quarantine"]
        result = _result(config, str(input_path), sha, suite, batch, checked, judged, timings, final)
        write_report(staged, final, result, source, batch, judged, config, id_column, spill)
    return result


def _concat_profiles(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """pd.concat(parts, ignore_index=True) of the chunks' profiles (each column its own array),
    a column at a time, each part's column freed once copied: the peak is one profile and a
    column (a million rows' profile is 160 MB), not two. Parts without rows are left out (an
    empty chunk's columns have no types), unless every part is empty. `parts` is emptied."""
    kept = [p for p in parts if len(p)] or parts[:1]
    parts.clear()
    if len(kept) == 1:
        return kept[0]
    columns = list(kept[0].columns)
    arrays = [{c: p[c].to_numpy() for c in columns} for p in kept]
    kept.clear()
    merged = {}
    for column in columns:
        merged[column] = np.concatenate([a.pop(column) for a in arrays])
        return_freed_memory(trim=True)
    return pd.DataFrame(merged, copy=False)


def _result(config: DatasetConfig, input_path: str, sha: str, suite: Suite, batch: Profiled, checked: _Tables,
            judged: Judgement, timings: dict[str, float], final: Path) -> BatchResult:
    quarantined = len(judged.quarantined) + len(batch.skipped)
    return BatchResult(
        dataset=config.name, input=input_path, input_sha256=sha, suite=suite.name,
        rows=len(checked.profile) + len(batch.skipped), labelled=checked.labelled, verdict=judged.verdict,
        reasons=judged.reasons, quarantined_rows=quarantined,
        clean_rows=len(judged.clean) if judged.verdict != REJECTED else 0, problems=judged.problems,
        failures=judged.failures, drift=checked.drift, anomaly=checked.anomaly, seconds=timings, report_dir=str(final),
        unparsed_lines=[{k: v for k, v in item.items() if k != "text"} for item in batch.skipped])


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
