"""Reading text datasets: CSV (gzip or not), parquet or JSONL files with a text column, a label
column and optional id and group columns, one record per row.

Every record is kept as read, so that ingest (and validation, and scoring) can judge it by
keel.data.text_rule and say why it is set aside: bytes that are not UTF-8 are decoded with
``surrogateescape`` (each becomes a lone surrogate, which text_rule flags), a JSON number or list
or a parquet integer stays what it is (a non-string text), and an empty CSV cell is missing. Only
a file that cannot be a table of texts at all (no text column, not parseable) is an error.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from keel.core.config import DatasetConfig
from keel.core.errors import DatasetError
from keel.core.io import decompress, read_bytes, sha256_hex
from keel.data.tables import check_unique_columns, strip_bom

# A file's format by the end of its name (lowercased); the first match wins.
SUFFIXES = ((".csv", "csv"), (".csv.gz", "csv"), (".parquet", "parquet"), (".pq", "parquet"),
            (".jsonl", "jsonl"), (".jsonl.gz", "jsonl"), (".ndjson", "jsonl"), (".ndjson.gz", "jsonl"))
# Posts with attachments pasted in run past the csv module's default 131,072 characters a field;
# text_rule's max_characters decides what is too long, not the parser.
FIELD_LIMIT = 2**31 - 1
_SURROGATE = re.compile("[\udc80-\udcff]")


@dataclass
class TextRows:
    """The records of one text file, as read (keel.data.text_rule judges them later)."""

    file: str  # the path as messages name it
    sha256: str  # of the file's bytes (still compressed)
    texts: list  # str (undecodable bytes as lone surrogates), None (missing), or a non-string value
    labels: list | None  # raw label values; None when the file has no label column
    ids: list[str]  # the id column's values as text (safe_text), else the record number as text
    groups: list | None  # the group column's values, when the config names one
    numbers: np.ndarray  # 1-based record numbers (CSV: data row, parquet: row, JSONL: line)
    columns: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def text_format(path: str, declared: str | None = None, data: bytes = b"") -> str:
    """csv, parquet or jsonl: `declared` (a source's `format`), else by the file's suffix, else
    by its content (parquet's magic bytes, a JSON object on the first line, else CSV)."""
    if declared:
        return declared
    name = path.split("?")[0].lower()
    for suffix, fmt in sorted(SUFFIXES, key=lambda s: -len(s[0])):
        if name.endswith(suffix):
            return fmt
    if data[:4] == b"PAR1":
        return "parquet"
    return "jsonl" if decompress(path, data).lstrip()[:1] == b"{" else "csv"


def read_text_file(path: str, config: DatasetConfig, data: bytes | None = None, require_labels: bool = True,
                   fmt: str | None = None) -> TextRows:
    """The records of the text file at `path` (a local path or fsspec URL; `data`: its bytes,
    when already read), in the format `fmt` or its name says. A file without the text column,
    with no label column when `require_labels`, without the configured group column, or one
    that does not parse, is a DatasetError naming the file, the column and the fix."""
    data = read_bytes(path) if data is None else data
    kind = text_format(path, fmt, data)
    if kind == "parquet":
        columns, records, numbers = _parquet_records(path, data)
    elif kind == "jsonl":
        columns, records, numbers = _jsonl_records(path, decompress(path, data))
    else:
        columns, records, numbers = _csv_records(path, decompress(path, data))
    _check_columns(path, columns, config, require_labels)

    def column(name: str | None) -> list | None:
        return records[name] if name and name in records else None

    ids = column(config.id_column)
    return TextRows(
        file=path, sha256=sha256_hex(data), texts=records[config.text_column], labels=column(config.label_column),
        ids=[str(n) for n in numbers] if ids is None else ["" if _missing(v) else safe_text(v) for v in ids],
        groups=column(config.group_column), numbers=np.asarray(numbers, dtype=np.int64), columns=columns)


def safe_text(value) -> str:
    """A value as text that any table can hold: each undecodable byte (a lone surrogate, which
    Arrow strings refuse) written as `\\xNN`. For ids, labels and group values, not for texts,
    which keep their bytes for text_rule to judge."""
    return _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", str(value))


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _check_columns(path: str, columns: list[str], config: DatasetConfig, require_labels: bool) -> None:
    shown = ", ".join(columns[:8]) + (" ..." if len(columns) > 8 else "") if columns else "none"
    if config.text_column not in columns:
        raise DatasetError(f"{path}: no text column '{config.text_column}' (its columns: {shown}); set text_column "
                           "in the dataset config to the column that holds the texts")
    if require_labels and config.label_column not in columns:
        raise DatasetError(f"{path}: no label column '{config.label_column}' (its columns: {shown}); set label_column "
                           "in the dataset config to the column that holds the labels, or add one")
    if config.group_column and config.group_column not in columns:
        raise DatasetError(f"{path}: no group column '{config.group_column}' (its columns: {shown}); fix "
                           "group_column in the dataset config or remove it")


def _csv_records(path: str, data: bytes) -> tuple[list[str], dict[str, list], list[int]]:
    """A CSV's header, its columns' values (an empty cell is None) and each record's data-row
    number; blank lines are skipped, a row with another number of fields than the header is an error."""
    text = strip_bom(data).decode("utf-8", errors="surrogateescape")
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        check_unique_columns(path, header)
        rows = [row for row in reader if row]
    except csv.Error as exc:
        raise DatasetError(f"{path}: not a readable CSV file (line {reader.line_num}: {exc}); fix that line or "
                           "re-export the file") from None
    for number, row in enumerate(rows, start=1):
        if len(row) != len(header):
            raise DatasetError(f"{path}: data row {number} has {len(row)} fields but the header has {len(header)}; "
                               "quote texts that hold commas or line breaks (\"...\") and re-export the file")
    values = {name: [row[j] if row[j] != "" else None for row in rows] for j, name in enumerate(header)}
    return header, values, list(range(1, len(rows) + 1))


def _jsonl_records(path: str, data: bytes) -> tuple[list[str], dict[str, list], list[int]]:
    """A JSONL file's keys (in order of first appearance), each key's values (None where a record
    lacks it) and each record's line number; blank lines are skipped."""
    text = strip_bom(data).decode("utf-8", errors="surrogateescape")
    objects, numbers = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            # strict=False: a raw control character in a string is the text's problem (text_rule), not the file's
            value = json.loads(line, strict=False)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: line {number} is not JSON ({exc.msg}); write one JSON object per line") from None
        if not isinstance(value, dict):
            raise DatasetError(f"{path}: line {number} is a JSON {type(value).__name__}, not an object; write one "
                               "JSON object per line, e.g. {\"text\": \"...\", \"label\": \"...\"}")
        objects.append(value)
        numbers.append(number)
    columns = list(dict.fromkeys(key for record in objects for key in record))
    return columns, {name: [record.get(name) for record in objects] for name in columns}, numbers


def _parquet_records(path: str, data: bytes) -> tuple[list[str], dict[str, list], list[int]]:
    """A parquet file's columns, their values as Python objects (binary text decoded as UTF-8
    with surrogateescape) and 1-based row numbers."""
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{path}: not a readable parquet file ({reason}); re-export the file") from None
    columns = list(table.column_names)
    check_unique_columns(path, columns)
    values = {}
    for name in columns:
        column = table.column(name)
        items = column.to_pylist()
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            items = [v.decode("utf-8", errors="surrogateescape") if isinstance(v, bytes) else v for v in items]
        values[name] = items
    return columns, values, list(range(1, table.num_rows + 1))
