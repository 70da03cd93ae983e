"""Validating incoming batches: suite, quarantine, drift and anomaly scores, then curation.

`validate_batch` reads one landed file (CSV, gzip or not; parquet; IDX with an optional
labels file), checks it with the dataset's suite and writes, into one report folder that
appears whole (built beside it, then renamed):

- ``report.json`` / ``report.md``: verdict, reasons, every failed expectation, drift figures;
- ``docs/index.html``: Great Expectations Data Docs of the four tables;
- ``quarantine.csv``: one row per problem (row, line, id, column, value, expectation, rule);
- ``quarantined_rows.csv``: the quarantined rows as they were read, to fix and send again;
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from keel.core import settings
from keel.core.config import DatasetConfig
from keel.data.datasets import (
    ParsedTable, curated_manifest, ingest, parse_idx_array, parse_idx_pair, parse_pixel_csv,
    parse_pixel_parquet,
)
from keel.core.errors import DatasetError, KeelError, OutputError
from keel.core.io import (atomic_path, decompress, ensure_writable_folder, folder_lock, read_bytes, replace_dir, sha256_hex,
                     temporary_beside, writing_into)
from keel.validation.suite import Suite, load_suite
from keel.validation.checks import Failure, class_table, failures_of, run_suites, schema_table

QUARANTINE_COLUMNS = ["row", "line", "id", "column", "value", "expectation", "rule"]
ACCEPTED, ACCEPTED_WITH_QUARANTINE, ACCEPTED_WITH_WARNINGS, REJECTED = (
    "accepted", "accepted with quarantine", "accepted with warnings", "rejected")


@dataclass
class BatchResult:
    """What validating one incoming batch found, and where its outputs are."""

    dataset: str
    input: str
    input_sha256: str
    suite: str
    rows: int
    labelled: bool
    verdict: str
    reasons: list[str]
    quarantined_rows: int
    clean_rows: int
    problems: int
    failures: list[Failure]
    drift: list[dict]
    anomaly: dict
    seconds: dict
    report_dir: str
    unparsed_lines: list[dict] = field(default_factory=list)
    files: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0: nothing wrong; 1: data problems found (quarantined rows, failed checks, rejection)."""
        return 0 if self.problems == 0 else 1

    @property
    def accepted(self) -> bool:
        return self.verdict != REJECTED

    def summary(self) -> str:
        lines = [f"{self.dataset}: {Path(self.input).name} ({self.rows} rows{'' if self.labelled else ', unlabelled'}) "
                 f"{self.verdict.upper()}"]
        lines += [f"  rejected because {r}" for r in self.reasons]
        if self.quarantined_rows:
            lines.append(f"  {self.quarantined_rows} rows quarantined, {self.clean_rows} clean")
        for failure in self.failures:
            lines.append(f"- [{failure.on_failure}] {failure.sentence()}")
            for example in failure.examples[:3]:
                lines.append("    e.g. " + ", ".join(f"{k}={v}" for k, v in example.items()))
        if self.unparsed_lines:
            lines.append(f"- [quarantine] {self._unparsed()}")
        drifted = [d for d in self.drift if d["drifted"]]
        for d in drifted:
            lines.append(f"- drift in {d['check']}: {d['statistic']} {d['value']:.3f} > {d['threshold']:g} (p={d['p_value']:.2g})")
        if self.anomaly.get("flagged"):
            lines.append(f"- {self.anomaly['flagged']} images score above the anomaly threshold {self.anomaly['threshold']:.4g}")
        lines.append(f"report  {self.report_dir} (Data Docs: {self.files.get('docs_index', '-')})")
        lines.append(f"checked in {self.seconds.get('checks', 0):.2f} s")
        return "\n".join(lines)

    def markdown(self) -> str:
        out = [f"# {self.dataset}: batch {self.verdict}", "",
               f"`{self.input}` (sha256 `{self.input_sha256[:16]}`), {self.rows} rows, "
               f"{'labelled' if self.labelled else 'unlabelled'}; suite `{self.suite}`.", ""]
        if self.reasons:
            out += ["**Rejected because**", ""] + [f"- {r}" for r in self.reasons] + [""]
        out.append(f"{self.quarantined_rows} rows quarantined, {self.clean_rows} clean; "
                   f"checks took {self.seconds.get('checks', 0):.2f} s.")
        if self.unparsed_lines:
            out += ["", f"- {self._unparsed()}"]
        if self.failures:
            out += ["", "| expectation | on failure | column | failing | examples |", "|---|---|---|---|---|"]
            for f in self.failures:
                examples = "<br>".join(", ".join(f"{k}={v}" for k, v in e.items()) for e in f.examples[:3])
                count = "" if f.unexpected_count is None else f"{f.unexpected_count} ({f.unexpected_percent:.2f} %)"
                rule = f.rule + (f" (observed {f.observed})" if f.observed else "")
                out.append(f"| {rule} | {f.on_failure} | {f.column or ''} | {count} | {examples} |")
        if self.drift:
            out += ["", "**Drift against the reference**", "", "| check | statistic | value | threshold | p-value | drifted |",
                    "|---|---|---|---|---|---|"]
            for d in self.drift:
                out.append(f"| {d['check']} | {d['statistic']} | {d['value']:.4f} | {d['threshold']:g} | {d['p_value']:.3g} | "
                           f"{'**yes**' if d['drifted'] else 'no'} |")
        if self.anomaly:
            out += ["", f"Anomaly scores: threshold {self.anomaly['threshold']:.4g}, {self.anomaly['flagged']} flagged, "
                        f"highest {self.anomaly['max']:.4g}."]
        return "\n".join(out)

    def _unparsed(self) -> str:
        first = self.unparsed_lines[0]
        return (f"{len(self.unparsed_lines)} lines could not be read: every line needs {first['expected']} fields "
                f"(e.g. line {first.get('line', '?')} has {first['fields']})")

    def to_dict(self) -> dict:
        return asdict(self)


def batches_summary(folder: str, results: list[dict]) -> dict:
    """One result for the validation of a landing folder's new files (exit code: the worst)."""
    lines = [f"{folder}: {len(results)} new file(s) validated" if results else f"{folder}: no new files to validate"]
    lines += [r["text"] for r in results]
    return {"input_path": folder, "batches": results, "text": "\n\n".join(lines),
            "exit_code": max((r["exit_code"] for r in results), default=0),
            "accepted": all(r["accepted"] for r in results)}


def default_report_dir(config: DatasetConfig, input_path: str, sha: str) -> Path:
    stem = Path(input_path).name.split(".")[0] or "batch"
    return settings.reports_dir() / "validation" / config.name / "incoming" / f"{stem}-{sha[:12]}"


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


def validate_batch(config: DatasetConfig, input_path: str, report_dir: str | Path | None = None,
                   labels_path: str | None = None, id_column: str | None = "id", suite: Suite | None = None) -> BatchResult:
    """Validates one landed file; writes the report folder; never modifies the input."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if report_dir:
        check_report_dir(Path(report_dir))  # before any work
    suite = suite or load_suite(config)
    parsed, sha, fmt = read_batch(config, input_path, labels_path, id_column)
    final = Path(report_dir) if report_dir else default_report_dir(config, input_path, sha)
    if not report_dir:
        check_report_dir(final)  # before the checks
    timings["read"] = time.perf_counter() - started

    tick = time.perf_counter()
    header = parsed.header
    schema = schema_table(header, config, id_column, parsed.kinds)
    schema_ok = (len(header) > 0 and set(config.pixel_columns) <= set(header)
                 and not (schema["role"] == "unexpected").any() and not schema["column"].duplicated().any())
    labelled = config.label_column in header
    available = {"labels"} if labelled else set()
    if id_column and id_column in header:
        available.add("ids")
    tables: dict[str, pd.DataFrame] = {"schema": schema}
    profile = parsed.profile
    classes = None
    drift_rows: list[dict] = []
    anomaly: dict = {}
    if schema_ok:
        profile = profile.copy()
        profile["label"] = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in profile["label"]]
        if suite.anomaly is not None and parsed.pixels is not None:
            from keel.models.anomaly import load_autoencoder, reconstruction_errors

            model = load_autoencoder(suite.anomaly_weights(), suite.anomaly.get("sha256"))
            scores = reconstruction_errors(model, parsed.pixels)
            profile["anomaly_score"] = scores
            available.add("anomaly_score")
            threshold = suite.anomaly["threshold"]
            anomaly = {"threshold": threshold, "flagged": int((scores > threshold).sum()),
                       "max": float(scores.max()) if len(scores) else 0.0}
        tables["rows"] = profile
        if labelled:
            classes = class_table(profile["label"], config, suite.classes)
            tables["classes"] = classes
        if suite.drift is not None and len(profile):
            from keel.validation.drift import drift_table

            counts = classes["rows"].to_numpy() if classes is not None else None
            drift = drift_table(profile, counts, suite.drift)
            tables["drift"] = drift
            drift_rows = [{k: (bool(v) if k == "drifted" else v) for k, v in row.items()} for row in drift.to_dict("records")]
    timings["prepare"] = time.perf_counter() - tick

    # Built beside the final folder (a dead writer's leftovers removed first), then put in its
    # place whole; a full disk names the folder instead of failing as an outage to retry.
    with (writing_into(final.parent, "free space there or pass --report a folder on another disk"),
          temporary_beside(final, directory=True) as staged):
        run = run_suites(tables, {t: suite.expectations(t, available) for t in tables},
                         f"{config.name}-{sha[:12]}", staged / "docs")
        timings["gx"] = run.seconds
        failures = failures_of(run, header, classes)
        tick = time.perf_counter()
        reasons_frame, quarantined = _quarantine(run, parsed, profile, failures, config)
        n_rows = len(profile) + len(parsed.skipped)
        reasons = _rejections(failures, len(quarantined) + len(parsed.skipped), n_rows, config, schema_ok)
        clean_index = np.setdiff1d(np.arange(len(profile)), quarantined) if schema_ok else np.array([], dtype=int)
        problems = len(failures) + len(parsed.skipped)
        verdict = REJECTED if reasons else (
            ACCEPTED_WITH_QUARANTINE if len(quarantined) or parsed.skipped else
            ACCEPTED_WITH_WARNINGS if problems else ACCEPTED)
        timings["quarantine"] = time.perf_counter() - tick
        timings["checks"] = timings["read"] + timings["prepare"] + timings["gx"] + timings["quarantine"]
        result = BatchResult(
            dataset=config.name, input=str(input_path), input_sha256=sha, suite=suite.name, rows=n_rows, labelled=labelled,
            verdict=verdict, reasons=reasons, quarantined_rows=len(quarantined) + len(parsed.skipped),
            clean_rows=len(clean_index) if verdict != REJECTED else 0, problems=problems, failures=failures,
            drift=drift_rows, anomaly=anomaly, seconds=timings, report_dir=str(final),
            unparsed_lines=[{k: v for k, v in item.items() if k != "text"} for item in parsed.skipped])
        tick = time.perf_counter()
        _write_outputs(staged, final, result, parsed, profile, reasons_frame, quarantined, clean_index, config, id_column)
        timings["write"] = time.perf_counter() - tick
        with atomic_path(staged / "report.json") as tmp:
            tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str))
        (staged / REPORT_MARKER).write_text(MARKER_TEXT)
        check_report_dir(final)  # again: nothing else may have taken the folder meanwhile
        replace_dir(staged, final)
    return result


# Every report folder Keel writes holds this file; only such a folder (or an empty one, or one
# Keel wrote before it marked its reports: `LEGACY_REPORT_NAMES` and a report.json) is replaced.
REPORT_MARKER = ".keel-report"
MARKER_TEXT = ("This folder is a validation report written by `keel validate`; validating into it again "
               "replaces it whole.\n")
LEGACY_REPORT_NAMES = {"report.json", "report.md", "docs", "quarantine.csv", "quarantined_rows.csv", "clean.parquet",
                       "anomalies.png"}


def is_keel_report(folder: Path) -> bool:
    """Whether `folder` is a report Keel wrote (its marker, or exactly a pre-marker report's files)."""
    folder = Path(folder)
    if (folder / REPORT_MARKER).is_file():
        return True
    names = {p.name for p in folder.iterdir()}
    if "report.json" not in names or not names <= LEGACY_REPORT_NAMES:
        return False
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and {"dataset", "input_sha256", "verdict", "suite"} <= set(report)


def check_report_dir(final: Path) -> None:
    """Refuses a report folder whose writing would delete data Keel did not write (an existing
    folder that is neither empty nor a Keel report, or a file), or that cannot be written."""
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise OutputError(f"{final}: is a file, not a report folder; pass --report a new folder or a previous Keel report")
    if final.is_dir() and any(final.iterdir()) and not is_keel_report(final):
        raise OutputError(f"{final}: the folder exists and is not a Keel report (no {REPORT_MARKER} file), so writing "
                          "the report would delete what it holds; pass --report a new or empty folder")
    ensure_writable_folder(final.parent, "pass --report a folder you can write to")


def _rejections(failures: list[Failure], quarantined: int, rows: int, config: DatasetConfig, schema_ok: bool) -> list[str]:
    """Why the batch as a whole is rejected, by the dataset's policy (empty: accepted)."""
    policy = config.validation
    reasons = [f.sentence() for f in failures if f.on_failure == "reject"]
    if not schema_ok and not reasons:
        reasons.append("the columns do not match the dataset")
    if rows and quarantined / rows > policy.max_quarantined_fraction:
        reasons.append(f"{quarantined} of {rows} rows ({quarantined / rows:.1%}) were quarantined, more than the "
                       f"policy's {policy.max_quarantined_fraction:.1%} (validation.max_quarantined_fraction)")
    switches = {"missing_class": policy.reject_on_missing_class, "class_share": policy.reject_on_class_share,
                "drift": policy.reject_on_drift}
    for failure in failures:
        if switches.get(failure.on_failure):
            detail = failure.observed or "; ".join(", ".join(f"{k}={v}" for k, v in e.items()) for e in failure.examples[:3])
            reasons.append(f"{failure.rule} ({detail}; policy reject_on_{failure.on_failure})")
    return reasons


PIXEL_CHECKS = {"pixel_nulls", "pixel_non_numeric", "pixel_non_integer", "pixel_min", "pixel_max"}


def _quarantine(run, parsed: ParsedTable, profile: pd.DataFrame, failures: list[Failure],
                config: DatasetConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per problem of every row that failed a row-level expectation, and those rows."""
    records: list[tuple] = []
    bad_rows: set[int] = set()
    row_position = {int(r): i for i, r in enumerate(profile["row"])} if len(profile) else {}
    for result in run.results.get("rows", []):
        meta = result.expectation_config.meta or {}
        if result.success or meta.get("on_failure") != "quarantine":
            continue
        kwargs = result.expectation_config.kwargs
        column = kwargs.get("column")
        expectation = result.expectation_config.type
        rule = meta.get("rule", expectation)
        positions = [row_position[int(item["row"])] for item in (result.result or {}).get("unexpected_index_list") or []]
        bad_rows.update(positions)
        if column in PIXEL_CHECKS and parsed.pixels is not None:
            records += _pixel_problems(parsed, profile, positions, column, config, expectation, rule)
            continue
        for i in positions:
            value = profile[column].iloc[i]
            records.append((int(profile["row"].iloc[i]), int(profile["line"].iloc[i]), profile["id"].iloc[i], column,
                            "" if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value)), expectation, rule))
    for item in parsed.skipped:
        records.append((None, item.get("line"), "", "", item["text"][:60], "csv_line_has_header_fields",
                        f"every line needs {item['expected']} fields; this one has {item['fields']}"))
    frame = pd.DataFrame.from_records(records, columns=QUARANTINE_COLUMNS)
    frame = frame.sort_values(["line", "column"], kind="stable").reset_index(drop=True)
    frame["row"] = frame["row"].astype("Int64")
    frame["line"] = frame["line"].astype("Int64")
    return frame, np.array(sorted(bad_rows), dtype=int)


def _pixel_problems(parsed: ParsedTable, profile, positions: list[int], check: str, config: DatasetConfig,
                    expectation: str, rule: str) -> list[tuple]:
    """Every offending pixel of the given rows for one pixel check (not just the first)."""
    matrix = parsed.pixels[positions]
    names = config.pixel_columns
    if matrix.dtype.kind == "f":
        missing = np.isnan(matrix)
        text = parsed.non_numeric[positions] if parsed.non_numeric is not None else np.zeros_like(missing)
    else:
        missing = text = np.zeros(matrix.shape, dtype=bool)
    masks = {
        "pixel_nulls": missing & ~text,
        "pixel_non_numeric": text,
        "pixel_non_integer": ~missing & (matrix != np.round(matrix)),
        "pixel_min": ~missing & (matrix < 0),
        "pixel_max": ~missing & (matrix > 255),
    }
    raw = parsed.table
    out = []
    for k, col in zip(*np.nonzero(masks[check])):
        i = positions[k]
        if check in ("pixel_nulls", "pixel_non_numeric"):
            value = raw.column(names[col])[i].as_py() if raw is not None else None
            value = "" if value is None else str(value)
        else:
            value = f"{matrix[k, col]:g}"
        out.append((int(profile["row"].iloc[i]), int(profile["line"].iloc[i]), profile["id"].iloc[i], names[col],
                    value, expectation, rule))
    return out


def _write_outputs(staged: Path, final: Path, result: BatchResult, parsed: ParsedTable, profile: pd.DataFrame,
                   reasons: pd.DataFrame, quarantined: np.ndarray, clean_index: np.ndarray,
                   config: DatasetConfig, id_column: str | None) -> None:
    files = {"report_json": str(final / "report.json"), "report_md": str(final / "report.md"),
             "docs_index": str(final / "docs" / "index.html"), "quarantine": str(final / "quarantine.csv")}
    reasons.to_csv(staged / "quarantine.csv", index=False)
    table = parsed.table
    if len(quarantined) and table is not None:
        rows = table.take(pa.array(quarantined))
        rows = rows.add_column(0, "line", pa.array(profile["line"].to_numpy()[quarantined]))
        rows = rows.add_column(0, "row", pa.array(profile["row"].to_numpy()[quarantined]))
        pacsv.write_csv(rows, staged / "quarantined_rows.csv")
        files["quarantined_rows"] = str(final / "quarantined_rows.csv")
    if result.accepted and len(clean_index) and parsed.pixels is not None:
        columns = {}
        if id_column and id_column in profile and (profile["id"] != "").any():
            columns[id_column] = pa.array(profile["id"].to_numpy()[clean_index])
        if result.labelled:
            columns[config.label_column] = pa.array(profile["label"].to_numpy()[clean_index].astype(np.int64))
        pixels = np.asarray(parsed.pixels[clean_index]).reshape(len(clean_index), -1).astype(np.uint8)
        for j, name in enumerate(config.pixel_columns):
            columns[name] = pa.array(pixels[:, j])
        pq.write_table(pa.table(columns), staged / "clean.parquet", compression="zstd")
        files["clean"] = str(final / "clean.parquet")
    if "anomaly_score" in profile and len(profile) and parsed.pixels is not None:
        from keel.core.plots import image_grid

        worst = np.argsort(-profile["anomaly_score"].to_numpy())[:24]
        shape = config.image
        images = np.nan_to_num(np.clip(np.asarray(parsed.pixels[worst], dtype=np.float32), 0, 255)) / 255.0
        images = images.reshape(len(worst), shape.height, shape.width, shape.channels).transpose(0, 3, 1, 2)
        threshold = result.anomaly["threshold"]
        titles = [f"line {profile['line'].iloc[i]}: {profile['anomaly_score'].iloc[i]:.3f}"
                  + (" !" if profile["anomaly_score"].iloc[i] > threshold else "") for i in worst]
        image_grid(images, staged / "anomalies.png", columns=8, titles=titles)
        files["anomalies_png"] = str(final / "anomalies.png")
    result.files = files
    (staged / "report.md").write_text(result.markdown() + "\n")


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
    clean = pq.read_table(report_dir / "clean.parquet").select(config.expected_columns)
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
