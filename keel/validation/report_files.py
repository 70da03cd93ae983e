"""The files of a validation report folder, written into its staging folder (keel.validation.incoming
puts the folder in place whole): report.json and report.md, quarantine.csv, quarantined_rows.csv,
clean.parquet (an accepted batch's passing rows), anomalies.png and the marker that says Keel
wrote the folder. Data Docs (docs/) are written by the suites' run.

A pixel-row batch's files are written as its rows stream by, never all of them in memory: the
clean rows from the pixels the first pass spilled (`PixelSpill`), the quarantined rows as read,
every offending pixel from a second pass that parses only the chunks holding quarantined rows
(keel.data.pixel_stream). Both passes read ahead in a thread (`prefetched`)."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from keel.core.atomic import atomic_path
from keel.core.config import DatasetConfig
from keel.core.plots import image_grid
from keel.core.prefetch import prefetched
from keel.data.pixel_rule import invalid_rows
from keel.data.pixel_stream import PixelRows
from keel.validation.quarantine import Judgement, pixel_problems_of
from keel.validation.report import BatchResult
from keel.validation.report_folder import MARKER_TEXT, REPORT_MARKER


# Rows of clean.parquet written at a time (one row group): 13 MB of Sign-MNIST pixels, ~100 MB to write.
CLEAN_GROUP_ROWS = 16384
ANOMALY_IMAGES = 24


def write_report(staged: Path, final: Path, result: BatchResult, source: PixelRows, batch, judged: Judgement,
                 config: DatasetConfig, id_column: str | None, spill: PixelSpill) -> None:
    """Writes every file of a pixel-row batch's report into `staged`; `result.files` names them
    where they will be (in `final`), `result.seconds["write"]` the time the data files took.
    `batch`: the first pass's Profiled (header, profile, images, reading)."""
    started = time.perf_counter()
    files = {"report_json": str(final / "report.json"), "report_md": str(final / "report.md"),
             "docs_index": str(final / "docs" / "index.html"), "quarantine": str(final / "quarantine.csv")}
    profile = batch.profile
    worst, images = None, {}
    if "anomaly_score" in profile and len(profile) and batch.images:
        worst = np.argsort(-profile["anomaly_score"].to_numpy())[:ANOMALY_IMAGES]
        valid = ~invalid_rows(profile.iloc[worst]).to_numpy()  # their spilled pixels are the pixels as read
        images = _spilled(spill, worst[valid])
    written = _second_pass(staged, source, batch, judged, worst, images, config)
    judged.quarantine = judged.plan.frame()
    judged.quarantine.to_csv(staged / "quarantine.csv", index=False)
    if written:
        files["quarantined_rows"] = str(final / "quarantined_rows.csv")
    if result.accepted and len(judged.clean) and batch.images:
        _clean_rows(spill, profile, judged.clean, result.labelled, config, id_column, staged / "clean.parquet")
        files["clean"] = str(final / "clean.parquet")
    spill.remove()
    if worst is not None:
        _anomalies(np.stack([images[int(i)] for i in worst]), profile, worst, result.anomaly["threshold"], config,
                   staged / "anomalies.png")
        files["anomalies_png"] = str(final / "anomalies.png")
    finish_report(staged, result, files, started)


def _second_pass(staged: Path, source: PixelRows, batch, judged: Judgement, worst: np.ndarray | None,
                 images: dict[int, np.ndarray], config: DatasetConfig) -> bool:
    """Parses again only the chunks that hold quarantined rows (or most anomalous images not in
    `images`, which it adds): writes the quarantined rows as read (with their row and line
    numbers) to quarantined_rows.csv and names every offending pixel of each pixel check in
    `judged.plan`. Returns whether quarantined_rows.csv was written."""
    quarantined = judged.quarantined
    missing = np.array([i for i in (worst if worst is not None else []) if int(i) not in images], dtype=int)
    needed = np.union1d(quarantined, missing)
    if not len(needed):
        return False
    bounds = np.cumsum([0, *source.chunk_rows])  # chunk i holds rows bounds[i] to bounds[i + 1]
    wanted = set((np.searchsorted(bounds, needed, side="right") - 1).tolist())
    written = False
    with open(staged / "quarantined_rows.csv", "wb") as out:
        chunks = source.chunks(batch.reading, wanted=wanted.__contains__, last=max(wanted))
        for index, parsed in enumerate(prefetched(chunks)):
            if parsed is None:
                continue
            lo, hi = bounds[index], bounds[index + 1]
            rows = _within(quarantined, lo, hi)
            if len(rows) and parsed.table is not None:
                _quarantined_rows(parsed, rows, out, header=not written)
                written = True
            for check in judged.plan.pixel_checks:
                positions = _within(check.positions, lo, hi)
                if len(positions):
                    judged.plan.parts[check.part] += pixel_problems_of(parsed, positions, check.check, config,
                                                                       check.expectation, check.rule)
            for i in missing[(missing >= lo) & (missing < hi)]:
                images[int(i)] = np.asarray(parsed.pixels[i - lo], dtype=np.float32)
    if not written:
        (staged / "quarantined_rows.csv").unlink()
    return written


def _spilled(spill: PixelSpill, positions: np.ndarray) -> dict[int, np.ndarray]:
    """The spilled pixels of the rows at `positions` (any order), as float32."""
    wanted, found, start = np.sort(positions), {}, 0
    for pixels in spill.rows():
        for i in _within(wanted, start, start + len(pixels)):
            found[int(i) + start] = pixels[i].astype(np.float32)
        start += len(pixels)
    return found


def _within(positions: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The sorted `positions` from lo to hi (excluded), counted from lo."""
    return positions[np.searchsorted(positions, lo):np.searchsorted(positions, hi)] - lo


def finish_report(staged: Path, result: BatchResult, files: dict, started: float) -> None:
    """Writes report.md, report.json and the marker (any modality's report), once the data files
    named in `files` are written; `started`: when writing the data files began."""
    result.files = files
    (staged / "report.md").write_text(result.markdown() + "\n")
    result.seconds["write"] = time.perf_counter() - started
    with atomic_path(staged / "report.json") as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    (staged / REPORT_MARKER).write_text(MARKER_TEXT)


def _quarantined_rows(parsed, rows: np.ndarray, out, header: bool) -> None:
    """A chunk's quarantined rows as they were read, with their row and line numbers, appended
    to quarantined_rows.csv, to fix and send again."""
    table = parsed.table.take(pa.array(rows))
    table = table.add_column(0, "line", pa.array(parsed.profile["line"].to_numpy()[rows]))
    table = table.add_column(0, "row", pa.array(parsed.profile["row"].to_numpy()[rows]))
    pacsv.write_csv(table, out, write_options=pacsv.WriteOptions(include_header=header))


def _clean_rows(spill: PixelSpill, profile: pd.DataFrame, clean: np.ndarray, labelled: bool, config: DatasetConfig,
                id_column: str | None, path: Path) -> None:
    """The rows that passed, in the dataset's columns (and the id column): what curation adds;
    written `CLEAN_GROUP_ROWS` at a time from the spilled pixels."""
    ids = bool(id_column and id_column in profile and (profile["id"] != "").any())
    writer, pending, count, start = None, [], 0, 0
    try:
        for pixels in spill.rows():
            rows = clean[np.searchsorted(clean, start):np.searchsorted(clean, start + len(pixels))]
            if len(rows):
                pending.append((rows, pixels[rows - start]))
                count += len(rows)
            start += len(pixels)
            if count >= CLEAN_GROUP_ROWS:
                writer = _clean_group(writer, pending, profile, ids, labelled, config, id_column, path)
                pending, count = [], 0
        if count:
            writer = _clean_group(writer, pending, profile, ids, labelled, config, id_column, path)
    finally:
        if writer is not None:
            writer.close()


def _clean_group(writer, pending: list, profile: pd.DataFrame, ids: bool, labelled: bool, config: DatasetConfig,
                 id_column: str | None, path: Path) -> pq.ParquetWriter:
    """Writes one row group of clean rows: `pending` holds (positions, their pixels) for each
    chunk read since the last group."""
    positions = np.concatenate([rows for rows, _ in pending])
    pixels = np.concatenate([values for _, values in pending])
    columns = {}
    if ids:
        columns[id_column] = pa.array(profile["id"].to_numpy()[positions])
    if labelled:
        columns[config.label_column] = pa.array(profile["label"].to_numpy()[positions].astype(np.int64))
    by_column = np.ascontiguousarray(pixels.T)
    for j, name in enumerate(config.pixel_columns):
        columns[name] = pa.array(by_column[j])
    table = pa.table(columns)
    writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
    writer.write_table(table)
    return writer


def _anomalies(images: np.ndarray, profile: pd.DataFrame, worst: np.ndarray, threshold: float, config: DatasetConfig,
               path: Path) -> None:
    """A grid of the 24 images with the highest anomaly scores (`images`, rows `worst`), those
    above the threshold marked."""
    shape = config.image
    images = np.nan_to_num(np.clip(images, 0, 255)) / 255.0
    images = images.reshape(len(worst), shape.height, shape.width, shape.channels).transpose(0, 3, 1, 2)
    titles = [f"line {profile['line'].iloc[i]}: {profile['anomaly_score'].iloc[i]:.3f}"
              + (" !" if profile["anomaly_score"].iloc[i] > threshold else "") for i in worst]
    image_grid(images, path, columns=8, titles=titles)


class PixelSpill:
    """Every row's pixels as clean.parquet stores them (uint8), written as the first pass reads
    them to a file in the report's staging folder (Arrow IPC, lz4) and read back in order by
    the second pass: the clean rows are written without parsing the file again."""

    def __init__(self, path: Path):
        self.path, self.writer, self.schema = Path(path), None, None

    def add(self, pixels: np.ndarray) -> None:
        values = np.asarray(pixels)
        values = values if values.ndim == 2 else values.reshape(len(values), -1)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rows with a missing pixel: quarantined, never clean
            data = np.ascontiguousarray(values.astype(np.uint8))
        width = data.shape[1]
        array = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(data), [None, pa.py_buffer(data)])
        if self.writer is None:
            self.schema = pa.schema([("pixels", pa.binary(width))])
            self.writer = pa.ipc.new_file(str(self.path), self.schema, options=pa.ipc.IpcWriteOptions(compression="lz4"))
        self.writer.write_batch(pa.record_batch([array], schema=self.schema))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def rows(self) -> Iterator[np.ndarray]:
        """The pixels (rows x pixels, uint8) in the order added, a chunk at a time."""
        self.close()
        if not self.path.exists():
            return
        with pa.OSFile(str(self.path), "rb") as source:  # read, not mapped: mapped pages would count as ours
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                column = reader.get_batch(i).column(0)
                width = column.type.byte_width
                data = np.frombuffer(column.buffers()[1], np.uint8)[column.offset * width:(column.offset + len(column)) * width]
                yield data.reshape(len(column), width)

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
