"""Reading pixel tables: CSV (label, optional group and id columns, pixel1..pixelN) and
parquet files into a ParsedTable with its per-row profile, and the header checks every CSV
reader shares (byte-order mark, repeated column names)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from keel.core.config import DatasetConfig
from keel.core.errors import DatasetError
from keel.data.profile import ParsedTable, empty_profile, pixel_profile

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


def _first_line(text: bytes) -> str:
    end = text.find(b"\n")
    return (text if end < 0 else text[:end]).decode("utf-8", errors="replace").strip()


def _arrow_reason(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def _read_csv(data: bytes, column_types: dict | None, use_threads: bool) -> tuple[pa.Table, list[dict]]:
    ragged: list[dict] = []

    def on_invalid(row) -> str:
        ragged.append({"number": row.number, "fields": row.actual_columns, "expected": row.expected_columns,
                       "text": row.text})
        return "skip"

    table = pacsv.read_csv(
        pa.BufferReader(data),
        read_options=pacsv.ReadOptions(use_threads=use_threads),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types=column_types or {}),
    )
    return table, ragged


def _row_lines(data: bytes, rows: int) -> np.ndarray:
    """The file line of each of the CSV's first `rows` rows (the header is row 1). Arrow skips
    empty lines, so they count as lines but not as rows."""
    if b"\n\n" not in data and b"\n\r\n" not in data and not data.startswith((b"\n", b"\r\n")):
        return np.arange(1, rows + 1, dtype=np.int64)
    lines = [i for i, line in enumerate(data.split(b"\n"), start=1) if line not in (b"", b"\r")]
    return np.asarray(lines[:rows], dtype=np.int64)


def read_csv_table(data: bytes, column_types: dict | None = None) -> tuple[pa.Table, list[dict], np.ndarray]:
    """A CSV (already decompressed) as an Arrow table; the lines whose field count does not
    match the header (skipped: line, field count, expected count, text); and the file line of
    each row kept. Lines are the ones Arrow's parser reports, so a quoted comma or an empty
    line does not shift them."""
    table, ragged = _read_csv(data, column_types, use_threads=True)
    if ragged:  # Arrow numbers the rows it skips only when it reads on one thread
        table, ragged = _read_csv(data, column_types, use_threads=False)
    lines = _row_lines(data, 1 + table.num_rows + len(ragged))
    skipped_rows = [item.pop("number") for item in ragged]
    for item, row in zip(ragged, skipped_rows):
        item["line"] = int(lines[row - 1])
    kept = np.delete(lines, [0, *(row - 1 for row in skipped_rows)])
    return table, ragged, kept


def parse_pixel_csv(url: str, data: bytes, config: DatasetConfig, split: str = "train",
                    id_column: str | None = None) -> ParsedTable:
    """The rows of a `label,pixel1..pixelN` CSV (already decompressed) with their profile."""
    data = strip_bom(data)
    if not data.strip():
        return ParsedTable([], pd.Series([], dtype=object), None, empty_profile())
    # The csv module reads the header as pyarrow reads the rows: quoted names ("label") too.
    header = [c.strip() for c in next(csv.reader([_first_line(data)]), [])]
    check_unique_columns(url, header)
    pixel_names = [c for c in header if c not in (config.label_column, config.group_column, id_column)]
    # Fast path: every pixel column as int16. A text or fractional value makes pyarrow refuse,
    # and the general path below finds and reports it.
    table = None
    try:
        table, skipped, lines = read_csv_table(data, {c: pa.int16() for c in pixel_names})
        if any(table.column(c).null_count for c in pixel_names):
            table = None
    except pa.ArrowInvalid as exc:
        if "CSV conversion error" not in str(exc) and "out of range" not in str(exc):
            raise DatasetError(f"{url}: not a readable CSV table ({_arrow_reason(exc)}); fix that row or re-export the file") from None
    if table is None:
        try:
            table, skipped, lines = read_csv_table(data)
        except pa.ArrowInvalid as exc:
            raise DatasetError(f"{url}: not a readable CSV table ({_arrow_reason(exc)}); fix that row or re-export the file") from None
    parsed = parse_pixel_table(url, table, config, split, id_column, header)
    parsed.skipped = skipped
    parsed.profile["line"] = lines
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


def _labels(table: pa.Table, config: DatasetConfig) -> pd.Series:
    """The label column's raw values: int64 when clean, else objects (whole-number floats such
    as "3.0", as some exporters write labels, count as integers)."""
    if config.label_column not in table.column_names:
        return pd.Series([None] * table.num_rows, dtype=object)
    column = table.column(config.label_column)
    if pa.types.is_integer(column.type) and column.null_count == 0:
        return pd.Series(column.to_numpy(), dtype="int64")
    return pd.Series([int(v) if isinstance(v, float) and v.is_integer() else v for v in column.to_pylist()], dtype=object)


def _text_column(table: pa.Table, name: str | None) -> list[str] | None:
    if not name or name not in table.column_names:
        return None
    return [("" if v is None else str(v)) for v in table.column(name).to_pylist()]


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
    labels = _labels(table, config)
    matrix, non_numeric = pixel_matrix(table, pixel_names)
    profile = pixel_profile(matrix, non_numeric, pixel_names, labels, Path(url).name, split)
    for column, name in (("id", id_column), ("group", config.group_column)):
        values = _text_column(table, name)
        if values is not None:
            profile[column] = values
    shape_ok = [c for c in header if c != id_column] == config.expected_columns
    present = set(table.column_names)  # once: the property builds a new list at every call (0.5 s for 784 columns)
    kinds = {c: column_kind(table.column(c).type) for c in pixel_names if c in present}
    parsed = ParsedTable(header, labels, matrix if shape_ok else None, profile, table)
    parsed.non_numeric = non_numeric
    parsed.kinds = {c: k for c, k in kinds.items() if k != "integer"}
    return parsed


def pixel_matrix(table: pa.Table, names: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels as an N x P array: int32 when clean, else float32 with NaN for null/non-numeric."""
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
