"""Reading pixel datasets (CSV, IDX) into content-addressed dataset versions.

A version folder holds:
- ``meta.json``: sources with sha256, header, shape, classes, split ids and their hash;
- ``profile.parquet``: one row per input row (file, line, label, pixel min/max, counts of
  null, non-numeric and non-integer pixels, the first bad pixel) -- what validation checks;
- ``images.npy`` (uint8, N x H x W x C) and ``labels.npy`` (raw label values), written only
  when every row is well formed, so training can never read a malformed table.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import math
import struct
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from keel.core import settings
from keel.core.config import DatasetConfig, SourceFile
from keel.core.errors import DatasetError
from keel.core.io import atomic_dir, decompress, read_bytes, verify_sha256
from keel.core.secrets import redact
from keel.data.splits import GROUPING_FORMAT, holdout, plan_split

INGEST_FORMAT = 3  # bump when the stored layout changes, so old versions are not reused

PROFILE_COLUMNS = [
    "split", "file", "source", "row", "line", "id", "group", "label", "pixel_count", "pixel_min", "pixel_max",
    "pixel_nulls", "pixel_non_numeric", "pixel_non_integer", "bad_pixel", "bad_value",
    "mean_intensity", "std_intensity", "saturated_fraction",
]
# Per-image statistics the inferred suite bounds and the drift checks compare.
IMAGE_STATISTICS = ["mean_intensity", "std_intensity", "saturated_fraction"]


@dataclass
class ParsedTable:
    """One source file parsed: its header, raw labels, pixel matrix and per-row profile."""

    header: list[str]
    labels: pd.Series
    pixels: np.ndarray | None  # None when the columns do not form the configured image
    profile: pd.DataFrame
    table: pa.Table | None = None  # the rows as read (CSV/parquet), for writing subsets back out
    skipped: list[dict] = field(default_factory=list)  # CSV lines the parser could not split into the header's fields
    kinds: dict[str, str] = field(default_factory=dict)  # pixel columns that do not read as integers: their kind
    non_numeric: np.ndarray | None = None  # which pixels held text, when any did


# --------------------------------------------------------------------------- CSV


def _first_line(text: bytes) -> str:
    end = text.find(b"\n")
    return (text if end < 0 else text[:end]).decode("utf-8", errors="replace").strip()


UTF8_BOM = b"\xef\xbb\xbf"


def strip_bom(data: bytes) -> bytes:
    """A CSV's bytes (decompressed) without the UTF-8 byte-order mark that Excel's "CSV UTF-8"
    and PowerShell write before the header; every CSV reader calls this first, so the first
    column reads as `label`, not `\\ufefflabel`."""
    return data[len(UTF8_BOM):] if data.startswith(UTF8_BOM) else data


def check_unique_columns(url: str, names: list[str]) -> None:
    """Raises DatasetError when the header `names` holds a column name more than once (Arrow
    keeps both, and neither can then be read by name)."""
    positions: dict[str, list[int]] = {}
    for number, name in enumerate(names, start=1):
        positions.setdefault(name, []).append(number)
    repeated = {name: at for name, at in positions.items() if len(at) > 1}
    if repeated:
        listed = " and ".join(f"{name!r} (columns {', '.join(map(str, at[:-1]))} and {at[-1]})" for name, at in repeated.items())
        raise DatasetError(f"{url}: the header repeats column{'s' if len(repeated) > 1 else ''} {listed}; "
                           "rename or remove the extra column so that every column name appears once")


def read_csv_table(url: str, data: bytes, column_types: dict | None = None) -> tuple[pa.Table, list[dict]]:
    """A CSV (already decompressed) as an Arrow table, and the lines whose field count does not
    match the header (skipped, with line number, field count and text)."""
    ragged: list[dict] = []

    def on_invalid(row) -> str:
        ragged.append({"fields": row.actual_columns, "expected": row.expected_columns, "text": row.text})
        return "skip"

    table = pacsv.read_csv(
        pa.BufferReader(data),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types=column_types or {}),
    )
    if ragged:
        # Arrow does not say which lines it skipped: find them by counting fields per line.
        lines = data.split(b"\n")
        expected = ragged[0]["expected"]
        bad = [i + 1 for i, line in enumerate(lines[1:], start=1)
               if line.strip() and line.count(b",") + 1 != expected]
        for item, line in zip(ragged, bad):
            item["line"] = line
    return table, ragged


def data_lines(data: bytes, skipped: list[dict], n_rows: int) -> np.ndarray:
    """The file line number of each row Arrow kept (the header is line 1)."""
    if not skipped:
        return np.arange(2, n_rows + 2, dtype=np.int64)
    gone = {item["line"] for item in skipped}
    lines = data.split(b"\n")
    kept = [i + 1 for i, line in enumerate(lines[1:], start=1) if line.strip() and (i + 1) not in gone]
    return np.asarray(kept[:n_rows], dtype=np.int64)


def parse_pixel_csv(url: str, data: bytes, config: DatasetConfig, split: str = "train",
                    id_column: str | None = None) -> ParsedTable:
    """The rows of a `label,pixel1..pixelN` CSV (already decompressed) with their profile."""
    data = strip_bom(data)
    if not data.strip():
        return ParsedTable([], pd.Series([], dtype=object), None, _empty_profile())
    # The csv module reads the header as pyarrow reads the rows: quoted names ("label") too.
    header = [c.strip() for c in next(csv.reader([_first_line(data)]), [])]
    check_unique_columns(url, header)
    pixel_names = [c for c in header if c not in (config.label_column, config.group_column, id_column)]
    # Fast path: every pixel column as int16. A text or fractional value makes pyarrow refuse,
    # and the general path below finds and reports it.
    table, skipped = None, []
    try:
        table, skipped = read_csv_table(url, data, {c: pa.int16() for c in pixel_names})
        if any(table.column(c).null_count for c in pixel_names):
            table = None
    except pa.ArrowInvalid as exc:
        if "CSV conversion error" not in str(exc) and "out of range" not in str(exc):
            raise DatasetError(f"{url}: not a readable CSV table ({_arrow_reason(exc)}); fix that row or re-export the file") from None
    if table is None:
        try:
            table, skipped = read_csv_table(url, data)
        except pa.ArrowInvalid as exc:
            raise DatasetError(f"{url}: not a readable CSV table ({_arrow_reason(exc)}); fix that row or re-export the file") from None
    parsed = parse_pixel_table(url, table, config, split, id_column, header)
    parsed.skipped = skipped
    if skipped:
        parsed.profile["line"] = data_lines(data, skipped, table.num_rows)
    return parsed


def parse_pixel_parquet(url: str, data: bytes, config: DatasetConfig, split: str = "train",
                        id_column: str | None = None) -> ParsedTable:
    """The rows of a parquet file with `label, pixel1..pixelN` columns, with their profile."""
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetError(f"{url}: not a readable parquet file ({_arrow_reason(exc)}); re-export the file") from None
    parsed = parse_pixel_table(url, table, config, split, id_column)
    parsed.profile["line"] = parsed.profile["row"]  # no header line: the record number
    return parsed


def column_kind(arrow_type) -> str:
    """How a column's values read: integer, float, text or null."""
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_floating(arrow_type):
        return "float"
    if pa.types.is_null(arrow_type):
        return "null"
    return "text"


def parse_pixel_table(url: str, table: pa.Table, config: DatasetConfig, split: str = "train",
                      id_column: str | None = None, header: list[str] | None = None) -> ParsedTable:
    """A ParsedTable from an Arrow table of label, optional id, and pixel columns.

    Columns are matched by name: the configured columns in another order are put in order."""
    header = header if header is not None else list(table.column_names)
    others = [c for c in header if c != id_column]
    if others != config.expected_columns and sorted(others) == sorted(config.expected_columns) \
            and len(set(others)) == len(others) and list(table.column_names) == header:
        header = [c for c in header if c == id_column] + config.expected_columns
        table = table.select(header)
    pixel_names = [c for c in header if c not in (config.label_column, config.group_column, id_column)]
    n = table.num_rows
    if config.label_column in table.column_names:
        label_col = table.column(config.label_column)
        if pa.types.is_integer(label_col.type) and label_col.null_count == 0:
            labels = pd.Series(label_col.to_numpy(), dtype="int64")
        else:
            # Whole-number floats ("3.0", as some exporters write labels) count as integers.
            labels = pd.Series([int(v) if isinstance(v, float) and v.is_integer() else v
                                for v in label_col.to_pylist()], dtype=object)
    else:
        labels = pd.Series([None] * n, dtype=object)

    matrix, non_numeric = pixel_matrix(table, pixel_names)
    profile = _profile(matrix, non_numeric, pixel_names, labels, Path(url).name, split)
    if id_column and id_column in table.column_names:
        profile["id"] = [("" if v is None else str(v)) for v in table.column(id_column).to_pylist()]
    if config.group_column and config.group_column in table.column_names:
        profile["group"] = [("" if v is None else str(v)) for v in table.column(config.group_column).to_pylist()]
    shape_ok = [c for c in header if c != id_column] == config.expected_columns
    kinds = {c: column_kind(table.column(c).type) for c in pixel_names if c in table.column_names}
    parsed = ParsedTable(header, labels, matrix if shape_ok else None, profile, table)
    parsed.non_numeric = non_numeric
    parsed.kinds = {c: k for c, k in kinds.items() if k != "integer"}
    return parsed


def _arrow_reason(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def pixel_matrix(table: pa.Table, names: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels as an N x P array: int16 when clean, else float32 with NaN for null/non-numeric."""
    n = table.num_rows
    columns = [table.column(c) for c in names]
    if all(pa.types.is_integer(c.type) and c.null_count == 0 for c in columns):
        matrix = np.empty((n, len(names)), dtype=np.int32)
        for j, col in enumerate(columns):
            matrix[:, j] = col.to_numpy()
        return matrix, None
    matrix = np.empty((n, len(names)), dtype=np.float32)
    non_numeric = np.zeros((n, len(names)), dtype=bool)
    for j, col in enumerate(columns):
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_null(col.type):
            matrix[:, j] = col.to_numpy(zero_copy_only=False).astype(np.float32, copy=False) if n else []
        else:
            raw = pd.Series(col.to_pylist(), dtype=object)
            values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float32)
            matrix[:, j] = values
            non_numeric[:, j] = raw.notna().to_numpy() & np.isnan(values)
    return matrix, non_numeric


def _profile(matrix: np.ndarray, non_numeric: np.ndarray | None, names: list[str],
             labels: pd.Series, file: str, split: str) -> pd.DataFrame:
    """One row of statistics per input row: what the expectation suite checks."""
    n, p = matrix.shape
    profile = pd.DataFrame({"split": split, "file": file, "source": "", "row": np.arange(1, n + 1, dtype=np.int64),
                            "line": np.arange(2, n + 2, dtype=np.int64), "id": "", "group": "",
                            "label": labels.reset_index(drop=True), "pixel_count": np.full(n, p, dtype=np.int64)})
    if p == 0:
        bad = np.zeros((n, 0), dtype=bool)
        profile["pixel_min"] = np.nan
        profile["pixel_max"] = np.nan
        profile["pixel_nulls"] = profile["pixel_non_numeric"] = profile["pixel_non_integer"] = 0
    elif non_numeric is None:
        profile["pixel_min"] = matrix.min(axis=1)
        profile["pixel_max"] = matrix.max(axis=1)
        profile["pixel_nulls"] = profile["pixel_non_numeric"] = profile["pixel_non_integer"] = 0
        bad = None
    else:
        missing = np.isnan(matrix)
        filled_low = np.where(missing, np.inf, matrix)
        filled_high = np.where(missing, -np.inf, matrix)
        row_min, row_max = filled_low.min(axis=1), filled_high.max(axis=1)
        row_min[np.isinf(row_min)] = np.nan
        row_max[np.isinf(row_max)] = np.nan
        non_integer = ~missing & (matrix != np.round(matrix))
        profile["pixel_min"] = row_min
        profile["pixel_max"] = row_max
        profile["pixel_nulls"] = (missing & ~non_numeric).sum(axis=1)
        profile["pixel_non_numeric"] = non_numeric.sum(axis=1)
        profile["pixel_non_integer"] = non_integer.sum(axis=1)
        bad = missing | non_integer
    if p:
        out_of_range = (matrix < 0) | (matrix > 255)
        bad = out_of_range if bad is None else (bad | out_of_range)
    bad_rows = np.flatnonzero(bad.any(axis=1)) if p else np.array([], dtype=int)
    bad_pixel = np.full(n, "", dtype=object)
    bad_value = np.full(n, "", dtype=object)
    if len(bad_rows):
        first = bad[bad_rows].argmax(axis=1)
        for row, col in zip(bad_rows, first):
            bad_pixel[row] = names[col]
            value = matrix[row, col]
            if non_numeric is not None and non_numeric[row, col]:
                bad_value[row] = "non-numeric"
            elif np.isnan(value):
                bad_value[row] = "null"
            else:
                bad_value[row] = f"{value:g}"
    profile["bad_pixel"] = bad_pixel
    profile["bad_value"] = bad_value
    for name, values in image_statistics(matrix).items():
        profile[name] = values
    return profile[PROFILE_COLUMNS]


def image_statistics(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image mean and standard deviation of intensity (0-255) and the fraction of pixels
    at 0 or 255; missing or non-numeric pixels are left out."""
    n, p = matrix.shape
    if p == 0:
        return {name: np.full(n, np.nan) for name in IMAGE_STATISTICS}
    if matrix.dtype.kind == "f":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-missing rows give NaN, as they should
            mean = np.nanmean(matrix, axis=1)
            std = np.nanstd(matrix, axis=1)
            saturated = np.nanmean(np.where(np.isnan(matrix), np.nan, (matrix <= 0) | (matrix >= 255)), axis=1)
    else:
        values = matrix.astype(np.float32, copy=False)
        mean = values.mean(axis=1, dtype=np.float64)
        std = values.std(axis=1, dtype=np.float64)
        saturated = ((matrix <= 0) | (matrix >= 255)).mean(axis=1)
    return {"mean_intensity": mean, "std_intensity": std, "saturated_fraction": saturated}


def _empty_profile() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in PROFILE_COLUMNS})


# --------------------------------------------------------------------------- IDX

_IDX_TYPES = {0x08: np.uint8}
# Every element type the IDX format defines (signed byte, short, int, float, double besides 0x08).
_IDX_KNOWN_TYPES = {0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E}
_IDX_MAX_DIMS = 4  # labels 1, grey images 3, colour images 4


def parse_idx_array(url: str, data: bytes) -> np.ndarray:
    """An IDX file (MNIST's format, decompressed) as a numpy array; a header that cannot
    describe the file (element type, dimension count, sizes against the length) is a DatasetError."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{url}: not an IDX file (bad magic number); point labels_path/path at MNIST-style idx files")
    dtype, ndim = data[2], data[3]
    if dtype not in _IDX_KNOWN_TYPES:
        raise DatasetError(f"{url}: the IDX header's element type 0x{dtype:02x} is not an IDX type; "
                           "the file is corrupt or not IDX, so copy it again")
    if dtype not in _IDX_TYPES:
        raise DatasetError(f"{url}: IDX element type 0x{dtype:02x} is not supported (only unsigned bytes, 0x08)")
    if not 1 <= ndim <= _IDX_MAX_DIMS:
        raise DatasetError(f"{url}: the IDX header says {ndim} dimensions (IDX files have 1 to {_IDX_MAX_DIMS}); "
                           "the file is corrupt or not IDX, so copy it again")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DatasetError(f"{url}: the IDX header is cut short: {ndim} dimensions need {offset} header bytes, "
                           f"the file has {len(data)}; the file is truncated, so copy it again")
    dims = struct.unpack(f">{ndim}I", data[4:offset])
    expected = math.prod(dims)  # Python integers: four sizes of up to 2**32 - 1 do not overflow
    values = len(data) - offset  # one byte per value: unsigned bytes are the only type read
    if values < expected:
        raise DatasetError(f"{url}: the IDX header says shape {dims} ({expected} values) but the file holds {values}; "
                           "the file is truncated, so copy it again")
    if values > expected:
        extra = values - expected
        raise DatasetError(f"{url}: the file holds {extra} byte{'s' if extra > 1 else ''} more than the {expected} values of "
                           f"the shape {dims} its IDX header says; the header or the file is corrupt, so copy it again")
    return np.frombuffer(data, dtype=_IDX_TYPES[dtype], offset=offset).reshape(dims)


def parse_idx_pair(url: str, images: np.ndarray, labels: np.ndarray, labels_url: str,
                   config: DatasetConfig, split: str = "train") -> ParsedTable:
    """An IDX images/labels pair as a ParsedTable, with the same profile as a CSV."""
    shape = config.image
    expected = (shape.height, shape.width) if shape.channels == 1 else (shape.height, shape.width, shape.channels)
    if images.shape[1:] != expected:
        raise DatasetError(f"{url}: images are {images.shape[1:]} but the dataset config says {expected}; fix image: in the config")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetError(f"{labels_url}: holds {len(labels)} labels for {len(images)} images in {url}; the files do not belong together")
    matrix = images.reshape(len(images), -1)
    label_series = pd.Series(labels.astype(np.int64))
    profile = _profile(matrix, None, config.pixel_columns, label_series, Path(url).name, split)
    profile["line"] = np.arange(1, len(images) + 1)  # IDX has no header line: record number
    return ParsedTable(config.expected_columns, label_series, matrix, profile)


# --------------------------------------------------------------------------- versions


@dataclass
class DatasetVersion:
    """A stored, content-addressed dataset version."""

    path: Path

    @cached_property
    def meta(self) -> dict:
        return json.loads((self.path / "meta.json").read_text())

    @property
    def id(self) -> str:
        return self.meta["version"]

    @property
    def name(self) -> str:
        return self.meta["dataset"]

    @property
    def images_stored(self) -> bool:
        return self.meta["images_stored"]

    def profile(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "profile.parquet")

    def images(self) -> np.ndarray:
        if not self.images_stored:
            raise DatasetError(f"dataset version {self.id} has no images: {self.meta['images_missing_reason']}")
        return np.load(self.path / "images.npy", mmap_mode="r")

    def labels(self) -> np.ndarray:
        return np.load(self.path / "labels.npy")

    def indices(self, part: str) -> np.ndarray:
        """Row indices of 'train', 'evaluation' or 'test'."""
        return np.load(self.path / f"{part}_idx.npy")

    def groups(self) -> np.ndarray | None:
        """Each stored row's group (near-duplicates, or the group column's values)."""
        path = self.path / "groups.npy"
        return np.load(path) if path.exists() else None

    @property
    def split_description(self) -> str:
        """Which split the evaluation figures come from, in words ("" when no split was drawn:
        the rows could not be stored as images)."""
        return self.meta.get("split_description", "")

    @property
    def leakage(self) -> dict[str, dict]:
        """Per held-out part ("evaluation", "test"): rows, near-copy share, 1-NN accuracy, examples."""
        return {part: figures for part, figures in (self.meta.get("leakage") or {}).items() if part in ("evaluation", "test")}


def group_holdout(version: DatasetVersion, indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions within `indices` of a stratified `fraction` of those rows, in whole groups when
    the version has groups: the early-stopping slice carved from training (a near-copy of a
    validation row among the fitted rows would make early stopping wait for memorisation), or
    half of the evaluation rows (the anomaly threshold's calibration)."""
    groups = version.groups()
    return holdout(version.labels()[indices], None if groups is None else groups[indices], fraction, seed)


def version_id(config: DatasetConfig, source_hashes: list[dict]) -> str:
    """The content address: source bytes plus every setting that changes what is stored."""
    key = {
        "ingest_format": INGEST_FORMAT,
        "format": config.format,
        "sources": source_hashes,
        "image": config.image.model_dump(),
        "label_column": config.label_column,
        "pixel_prefix": config.pixel_prefix,
        "group_column": config.group_column,
        "evaluation_split": config.evaluation_split.model_dump(),
        "grouping_format": GROUPING_FORMAT,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class IngestResult:
    version: DatasetVersion
    reused: bool


def ingest(config: DatasetConfig, root: Path | None = None) -> IngestResult:
    """Reads the config's files and stores them as a dataset version, or reuses an identical one."""
    root = Path(root) if root else settings.versions_dir()
    if config.format == "image-folder":
        from keel.data.imagefolder import ingest_image_folder

        return ingest_image_folder(config, root)
    sources: list[tuple[str, SourceFile]] = [("train", s) for s in config.train] + [("test", s) for s in config.test]
    sources += [("train", s) for s in curated_sources(config.name)]
    raw: list[tuple[str, SourceFile, bytes, bytes | None]] = []
    hashes = []
    for split, source in sources:
        url = config.resolve(source.path)
        data = read_bytes(url)
        digest = verify_sha256(url, data, source.sha256)
        labels_data, labels_digest = None, None
        if source.labels_path:
            labels_url = config.resolve(source.labels_path)
            labels_data = read_bytes(labels_url)
            labels_digest = verify_sha256(labels_url, labels_data, source.labels_sha256)
        raw.append((split, source, data, labels_data))
        hashes.append({"split": split, "sha256": digest, "labels_sha256": labels_digest})

    vid = version_id(config, hashes)
    target = root / config.name / vid
    if (target / "meta.json").exists():
        return IngestResult(DatasetVersion(target), reused=True)

    tables = []
    for (split, source, data, labels_data), digest in zip(raw, hashes):
        url = config.resolve(source.path)
        fmt = source.format or config.format
        if fmt == "csv":
            table = parse_pixel_csv(url, decompress(url, data), config, split)
        elif fmt == "parquet":
            table = parse_pixel_parquet(url, data, config, split)
        else:
            labels_url = config.resolve(source.labels_path)
            images = parse_idx_array(url, decompress(url, data))
            labels = parse_idx_array(labels_url, decompress(labels_url, labels_data))
            table = parse_idx_pair(url, images, labels, labels_url, config, split)
        if config.group_column and config.group_column not in table.header and table.header:
            raise DatasetError(f"{config.where}: group_column '{config.group_column}' is not a column of {url} "
                               f"(its columns start {', '.join(table.header[:4])}); fix group_column or remove it")
        if table.skipped:
            first = table.skipped[0]
            raise DatasetError(f"{url}: line {first.get('line', '?')} has {first['fields']} fields but the header has "
                               f"{first['expected']} ({len(table.skipped)} such lines); fix or remove them")
        table.profile["source"] = digest["sha256"][:12]
        table.profile["file"] = source_name(url)
        tables.append(table)

    profile = pd.concat([t.profile for t in tables], ignore_index=True) if tables else _empty_profile()
    with atomic_dir(target) as tmp:
        meta = _write_version(tmp, config, tables, profile, hashes, raw, vid)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return IngestResult(DatasetVersion(target), reused=False)


def _write_version(tmp: Path, config: DatasetConfig, tables: list[ParsedTable], profile: pd.DataFrame,
                   hashes: list[dict], raw, vid: str) -> dict:
    stored = profile.copy()
    # Labels are stored as text so a stray "x" does not change how the good labels compare.
    stored["label"] = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in profile["label"]]
    stored.to_parquet(tmp / "profile.parquet", index=False)
    reason = _images_missing_reason(config, tables, profile)
    shape = config.image
    split_info: dict = {}
    if reason is None:
        images = np.concatenate([t.pixels for t in tables]).astype(np.uint8)
        images = images.reshape(len(images), shape.height, shape.width, shape.channels)
        labels = np.concatenate([t.labels.to_numpy(dtype=np.int64) for t in tables])
        np.save(tmp / "images.npy", images)
        np.save(tmp / "labels.npy", labels)
        is_test = (profile["split"] == "test").to_numpy()
        plan = plan_split(config, images, labels, np.where(is_test, "test", "pool"),
                          profile["group"].to_numpy() if config.group_column else None)
        np.save(tmp / "groups.npy", plan.groups)
        for part in ("train", "evaluation", "test"):
            np.save(tmp / f"{part}_idx.npy", plan.indices(part))
        row_ids = (profile["source"] + ":" + profile["line"].astype(str)).to_numpy()
        split_info = {
            "train_rows": int(len(plan.indices("train"))),
            "evaluation_rows": int(len(plan.indices("evaluation"))),
            "test_rows": int(is_test.sum()),
            "evaluation_ids_sha256": hashlib.sha256("\n".join(row_ids[plan.indices("evaluation")]).encode()).hexdigest(),
            **plan.meta,
        }
    return {
        "dataset": config.name,
        "version": vid,
        "ingest_format": INGEST_FORMAT,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(),
        "format": config.format,
        "sources": [
            # Named without credentials (a URL's password, a signed query): the sha256 identifies the content.
            {"split": h["split"], "path": redact(config.resolve(s.path)), "sha256": h["sha256"],
             "labels_path": redact(config.resolve(s.labels_path)) if s.labels_path else None,
             "labels_sha256": h["labels_sha256"]}
            for h, (_, s, _, _) in zip(hashes, raw)
        ],
        "header": tables[0].header if tables else [],
        "non_integer_columns": {c: k for t in tables for c, k in t.kinds.items()},
        "headers_differ": [source_name(config.resolve(s.path)) for t, (_, s, _, _) in zip(tables, raw) if t.header != tables[0].header],
        "rows": int(len(profile)),
        "image": shape.model_dump(),
        "label_column": config.label_column,
        "labels": config.labels,
        "class_names": config.class_names,
        "evaluation_split": config.evaluation_split.model_dump(),
        "group_column": config.group_column,
        "curated_batches": curated_batches(config.name),
        "images_stored": reason is None,
        "images_missing_reason": reason,
        **split_info,
    }


def source_name(url: str) -> str:
    """How a stored version names a source file: its name, without a URL's query (which may
    carry a signature or token) or credentials."""
    if "://" in url:
        from urllib.parse import urlsplit

        url = urlsplit(url).path
    return Path(url).name


def curated_manifest(dataset: str) -> Path:
    """The list of accepted incoming batches that join a dataset's training data."""
    return settings.curated_dir() / dataset / "manifest.json"


def curated_batches(dataset: str) -> list[dict]:
    """The accepted batches of `dataset`, oldest first, each with its validation result."""
    path = curated_manifest(dataset)
    return json.loads(path.read_text())["batches"] if path.exists() else []


def curated_sources(dataset: str) -> list[SourceFile]:
    """The clean files of the accepted batches, as training sources."""
    folder = curated_manifest(dataset).parent
    return [SourceFile(path=str(folder / b["file"]), sha256=b["sha256"], format="parquet") for b in curated_batches(dataset)]


def _images_missing_reason(config: DatasetConfig, tables: list[ParsedTable], profile: pd.DataFrame) -> str | None:
    """Why the rows cannot become uint8 images and class labels (None when they can)."""
    if not len(profile):
        return "the input has no rows"
    if any(t.pixels is None for t in tables):
        return f"the columns are not {config.label_column}, {config.pixel_prefix}1..{config.pixel_prefix}{config.image.n_pixels}"
    bad = (profile["pixel_nulls"] > 0) | (profile["pixel_non_numeric"] > 0) | (profile["pixel_non_integer"] > 0) \
        | (profile["pixel_min"] < 0) | (profile["pixel_max"] > 255)
    if bad.any():
        return f"{int(bad.sum())} rows have pixels that are not integers in 0-255"
    known = set(config.labels)
    if not all(isinstance(v, (int, np.integer)) and int(v) in known for v in profile["label"]):
        return "some labels are missing or not among the configured classes"
    return None


def class_indices(labels: np.ndarray, configured: list[int]) -> np.ndarray:
    """Raw label values mapped to class indices (the configured labels in sorted order)."""
    lookup = {label: i for i, label in enumerate(configured)}
    return np.array([lookup[int(v)] for v in labels], dtype=np.int64) if len(labels) else np.array([], dtype=np.int64)
