"""The files of a validation report folder, written into its staging folder (keel.validation.incoming
puts the folder in place whole): report.json and report.md, quarantine.csv, quarantined_rows.csv,
clean.parquet (an accepted batch's passing rows), anomalies.png and the marker that says Keel
wrote the folder. Data Docs (docs/) are written by the suites' run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from keel.core.atomic import atomic_path
from keel.core.config import DatasetConfig
from keel.core.plots import image_grid
from keel.data.profile import ParsedTable
from keel.validation.quarantine import Judgement
from keel.validation.report import BatchResult
from keel.validation.report_folder import MARKER_TEXT, REPORT_MARKER


def write_report(staged: Path, final: Path, result: BatchResult, parsed: ParsedTable, profile: pd.DataFrame,
                 judged: Judgement, config: DatasetConfig, id_column: str | None) -> None:
    """Writes every file of the report into `staged`; `result.files` names them where they will
    be (in `final`), `result.seconds["write"]` the time the data files took."""
    started = time.perf_counter()
    files = {"report_json": str(final / "report.json"), "report_md": str(final / "report.md"),
             "docs_index": str(final / "docs" / "index.html"), "quarantine": str(final / "quarantine.csv")}
    judged.quarantine.to_csv(staged / "quarantine.csv", index=False)
    if len(judged.quarantined) and parsed.table is not None:
        _quarantined_rows(parsed.table, profile, judged.quarantined, staged / "quarantined_rows.csv")
        files["quarantined_rows"] = str(final / "quarantined_rows.csv")
    if result.accepted and len(judged.clean) and parsed.pixels is not None:
        _clean_rows(parsed, profile, judged.clean, result.labelled, config, id_column, staged / "clean.parquet")
        files["clean"] = str(final / "clean.parquet")
    if "anomaly_score" in profile and len(profile) and parsed.pixels is not None:
        _anomalies(parsed, profile, result.anomaly["threshold"], config, staged / "anomalies.png")
        files["anomalies_png"] = str(final / "anomalies.png")
    finish_report(staged, result, files, started)


def finish_report(staged: Path, result: BatchResult, files: dict, started: float) -> None:
    """Writes report.md, report.json and the marker (any modality's report), once the data files
    named in `files` are written; `started`: when writing the data files began."""
    result.files = files
    (staged / "report.md").write_text(result.markdown() + "\n")
    result.seconds["write"] = time.perf_counter() - started
    with atomic_path(staged / "report.json") as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    (staged / REPORT_MARKER).write_text(MARKER_TEXT)


def _quarantined_rows(table: pa.Table, profile: pd.DataFrame, quarantined: np.ndarray, path: Path) -> None:
    """The quarantined rows as they were read, with their row and line numbers, to fix and send again."""
    rows = table.take(pa.array(quarantined))
    rows = rows.add_column(0, "line", pa.array(profile["line"].to_numpy()[quarantined]))
    rows = rows.add_column(0, "row", pa.array(profile["row"].to_numpy()[quarantined]))
    pacsv.write_csv(rows, path)


def _clean_rows(parsed: ParsedTable, profile: pd.DataFrame, clean: np.ndarray, labelled: bool, config: DatasetConfig,
                id_column: str | None, path: Path) -> None:
    """The rows that passed, in the dataset's columns (and the id column): what curation adds."""
    columns = {}
    if id_column and id_column in profile and (profile["id"] != "").any():
        columns[id_column] = pa.array(profile["id"].to_numpy()[clean])
    if labelled:
        columns[config.label_column] = pa.array(profile["label"].to_numpy()[clean].astype(np.int64))
    pixels = np.asarray(parsed.pixels[clean]).reshape(len(clean), -1).astype(np.uint8)
    for j, name in enumerate(config.pixel_columns):
        columns[name] = pa.array(pixels[:, j])
    pq.write_table(pa.table(columns), path, compression="zstd")


def _anomalies(parsed: ParsedTable, profile: pd.DataFrame, threshold: float, config: DatasetConfig, path: Path) -> None:
    """A grid of the 24 images with the highest anomaly scores, those above the threshold marked."""
    worst = np.argsort(-profile["anomaly_score"].to_numpy())[:24]
    shape = config.image
    images = np.nan_to_num(np.clip(np.asarray(parsed.pixels[worst], dtype=np.float32), 0, 255)) / 255.0
    images = images.reshape(len(worst), shape.height, shape.width, shape.channels).transpose(0, 3, 1, 2)
    titles = [f"line {profile['line'].iloc[i]}: {profile['anomaly_score'].iloc[i]:.3f}"
              + (" !" if profile["anomaly_score"].iloc[i] > threshold else "") for i in worst]
    image_grid(images, path, columns=8, titles=titles)
