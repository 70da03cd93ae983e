"""What a scoring job reads: the input files (pixel tables, text files, or photos), and the
tables of rows it scores, each row named as the outputs name it (id, row number, input file).

A file of pixel rows is read as a stream of record batches (keel.core.streams: a CSV gunzipped
as it streams, parquet by row groups), each batch one table, rows numbered from 1 across the
file, ids from the id column as written; the file's sha256 is taken by a chunked pass before,
and checked against the bytes the batches came from. A file of texts (CSV, parquet or JSONL) is
one table, read in memory when it is reached as text datasets are (keel.data.text_table), so a
text that is not a string or not UTF-8 reaches the model's preprocessing as it is, to be
refused there. A folder of photos is one table of every photo (numbered in path order, ids
relative to the folder), read once, the entries its listing refused (a link out of the
folder...) reported with their reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from keel.core.config import DatasetConfig
from keel.core.errors import DatasetError
from keel.core.io import decompress, exists, is_remote, read_bytes, sha256_hex
from keel.core.listing import list_files, visible_files
from keel.core.streams import file_sha256, open_record_batches
from keel.data.tables import check_unique_columns, strip_bom
from keel.data.text_table import read_text_file
from keel.serving.outputs import ERROR_COLUMNS

INPUT_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
TEXT_SUFFIXES = (*INPUT_SUFFIXES, ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")  # what a text model scores
# Pixel rows read, preprocessed, scored and written at a time, whatever the file's size. Arrow's
# reader costs about 60 KB of memory per row of 784 text pixels (parsed, typed, as a matrix, as
# images) while a batch is in flight: 2,048 rows keep it near 150 MB beside the 0.9 GB of torch
# and the model, and larger batches are no faster (each is scored 1024 rows at a time anyway).
BATCH_ROWS = 2048


@dataclass
class Inputs:
    """Every input file of a job and its sha256: photos with their bytes, read once; other
    files (`blobs` None) hashed by a chunked pass and read again, as a stream, when scored;
    and the entries a photo listing refused (path -> reason), which are part of what was asked."""

    files: list[str]
    blobs: list[bytes] | None
    refused: dict[str, str] = field(default_factory=dict)
    sha256: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = ([sha256_hex(data) for data in self.blobs] if self.blobs is not None
                       else [file_sha256(path) for path in self.files])

    def identity(self) -> list[dict]:
        return [{"file": path, "sha256": sha} for path, sha in zip(self.files, self.sha256)]


@dataclass
class ScoringTable:
    """Rows to score, as the model's modality preprocesses them, and how the outputs name each."""

    rows: pa.Table | pd.DataFrame
    ids: np.ndarray
    numbers: np.ndarray  # the row numbers the outputs give (from 1)
    files: np.ndarray  # the input file of each row
    sha256: np.ndarray  # its sha256
    refused: pd.DataFrame  # error rows (ERROR_COLUMNS) for entries refused before reading


def read_inputs(input_path: str | Path, kind: str) -> Inputs:
    """The files a job scores, hashed: photo files for an image model (`kind` "photos"), read
    whole; text files for a text model ("texts"), else pixel tables ("pixels"), read when scored."""
    if kind == "photos":
        files, refused = image_files(input_path)
        return Inputs([str(path) for path in files], [read_bytes(str(path)) for path in files], refused)
    files = input_files(input_path, TEXT_SUFFIXES if kind == "texts" else INPUT_SUFFIXES)
    return Inputs([str(path) for path in files], None)


def input_files(path: str | Path, suffixes: tuple[str, ...] = INPUT_SUFFIXES) -> list[str]:
    """The files to score: `path` itself, or every file in the folder `path` whose name ends in
    one of `suffixes` (local paths or fsspec URLs)."""
    files = list_files(path, suffixes)
    if files == []:
        shown = ", ".join(s for s in suffixes if s != ".pq")
        raise DatasetError(f"{path}: the folder holds no {shown} files to score")
    if files is None:
        if not exists(path):
            raise DatasetError(f"{path}: no such file or folder")
        files = [str(path)]
    return files


def image_files(path: str | Path) -> tuple[list[str], dict[str, str]]:
    """(the photos to score, the entries refused: path -> reason): `path` itself, or every file
    below the folder `path` by the listing rules of image-folder ingest (keel.core.listing:
    hidden names skipped, no link followed out of the folder, no folder link followed)."""
    listing = visible_files(path, recursive=True)
    if listing is None:
        if not exists(path):
            raise DatasetError(f"{path}: no such file or folder")
        return [str(path)], {}
    if not listing.files and not listing.quarantined:
        raise DatasetError(f"{path}: the folder holds no files to score")
    return listing.files, listing.quarantined


def read_table(path: str, data: bytes) -> pa.Table:
    """A CSV (gzip or not) or parquet file as an Arrow table; unreadable files fail naming the file."""
    if data[:4] == b"PAR1" or str(path).lower().endswith((".parquet", ".pq")):
        try:
            return pq.read_table(pa.BufferReader(data))
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
    text = strip_bom(decompress(str(path), data))
    if not text.strip():
        raise DatasetError(f"{path}: the file is empty; nothing to score")
    try:
        table = pacsv.read_csv(pa.BufferReader(text))
    except pa.ArrowInvalid as exc:
        raise DatasetError(f"{path}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    check_unique_columns(str(path), table.column_names)
    return table


def scoring_tables(inputs: Inputs, input_path: str | Path, kind: str, id_column: str,
                   model_config: Callable[[], dict] | None = None) -> Iterator[ScoringTable]:
    """The tables a job scores, each read when it is reached: a batch of BATCH_ROWS rows of a
    file of pixel rows at a time, one table per file of texts, or one of every photo.
    `model_config` gives the model's config (text files are read by its text and label
    columns; asked for when the first text file is reached)."""
    if kind == "photos":
        yield _photo_table(inputs, input_path)
        return
    if kind == "texts":
        config = model_config()
        for path, sha in zip(inputs.files, inputs.sha256):
            data = read_bytes(path)
            if sha256_hex(data) != sha:
                raise _changed(path)
            yield text_table(path, data, sha, config, id_column)
        return
    for path, sha in zip(inputs.files, inputs.sha256):
        yield from pixel_tables(path, sha, id_column)


def pixel_tables(path: str, sha: str, id_column: str, batch_rows: int | None = None) -> Iterator[ScoringTable]:
    """A file of pixel rows (CSV, gzip or not, or parquet) as tables of `batch_rows` rows
    (BATCH_ROWS), numbered from 1 across the file, ids from `id_column` as written, else the
    row number; a file whose bytes are not those hashed as `sha` (changed since) fails."""
    digest, done = hashlib.sha256(), 0
    for batch in open_record_batches(path, batch_rows or BATCH_ROWS, text_columns={id_column},
                                     check_header=check_unique_columns, digest=digest):
        table, n = pa.Table.from_batches([batch]), batch.num_rows
        numbers = np.arange(done + 1, done + n + 1)
        ids = (np.asarray(table.column(id_column).to_pylist(), dtype=object) if id_column in table.column_names
               else numbers)
        yield ScoringTable(table, ids, numbers, np.full(n, path, dtype=object), np.full(n, sha, dtype=object),
                           pd.DataFrame(columns=ERROR_COLUMNS))
        done += n
    if digest.hexdigest() != sha:
        raise _changed(path)


def _changed(path: str) -> DatasetError:
    return DatasetError(f"{path}: the file changed while it was being scored (its sha256 is not the one taken "
                        "before); score it again once it is complete")


def text_table(path: str, data: bytes, sha: str, model_config: dict, id_column: str) -> ScoringTable:
    """One text file (CSV, gzip or not; parquet; JSONL) as the text model's rows: its text column
    and, when there, its label column (class names), numbered by record, ids from `id_column`."""
    text, label = model_config.get("text_column") or "text", model_config.get("label_column", "label")
    config = DatasetConfig(name="scoring", format="text", train=[{"path": path}], text_column=text, label_column=label,
                           id_column=None if id_column == text else id_column)
    try:
        read = read_text_file(path, config, data, require_labels=False)
    except DatasetError as exc:
        if f"no text column '{text}'" not in str(exc):
            raise
        # The reader's fix names a dataset config; a scoring job has none, the model fixes the column.
        raise DatasetError(f"{str(exc).split(';')[0]}; the model reads its texts from column '{text}': rename the "
                           "file's text column to that") from None
    rows = pd.DataFrame({text: pd.Series(read.texts, dtype=object)})
    if read.labels is not None:
        rows[label] = pd.Series(read.labels, dtype=object)
    n = len(read)
    return ScoringTable(rows, np.asarray(read.ids, dtype=object), read.numbers, np.full(n, path, dtype=object),
                        np.full(n, sha, dtype=object), pd.DataFrame(columns=ERROR_COLUMNS))


def _photo_table(inputs: Inputs, input_path: str | Path) -> ScoringTable:
    """Every photo (path and bytes) in path order, refused entries numbered among them."""
    fs, stripped = fsspec.core.url_to_fs(str(input_path))
    root = (fs.unstrip_protocol(stripped) if is_remote(input_path) else stripped).rstrip("/")
    entries = sorted([(path, data, sha) for path, data, sha in zip(inputs.files, inputs.blobs, inputs.sha256)]
                     + [(path, None, reason) for path, reason in inputs.refused.items()], key=lambda e: e[0])
    names = np.array([path[len(root) + 1:] if path.startswith(root + "/") else Path(path).name for path, _, _ in entries],
                     dtype=object)
    kept = np.array([i for i, (_, data, _) in enumerate(entries) if data is not None], dtype=np.int64)
    refused = pd.DataFrame([{"input_file": path, "row": i + 1, "id": names[i], "column": "", "value": "", "reason": reason}
                            for i, (path, data, reason) in enumerate(entries) if data is None], columns=ERROR_COLUMNS)
    rows = pd.DataFrame({"path": [entries[i][0] for i in kept], "data": [entries[i][1] for i in kept]})
    return ScoringTable(rows, names[kept], kept + 1, np.array([entries[i][0] for i in kept], dtype=object),
                        np.array([entries[i][2] for i in kept], dtype=object), refused)
