"""Pixel-row files read a chunk of rows at a time: checking a file of any size holds a chunk of
pixels, not the whole file several times over (about 19.5 KB a row, measured, for 784 bytes).

`keel validate` reads a landed CSV (gzip or not: decompressed as it streams) or parquet file
through `PixelRows` twice: a first pass profiles every row, a second one parses again only the
chunks holding rows the report shows as read. A chunk is parsed by the code that parses a whole
file (keel.data.tables), its rows and lines numbered as in the whole file: a CSV chunk is a run
of whole lines behind the header line. IDX and gzipped parquet files are read whole.

A chunk can still read differently than the whole file: Arrow types a column from all its
values, so one "abc" makes a column text in the whole file but only in its own chunk, and one
empty pixel turns the whole file's pixels into floats (statistics in float32) but only its
chunk's. `Signatures` notes each chunk's types; when chunks disagree, the first pass runs again
with the whole file's types (`Reading`). Clean files, and files whose odd values fall in one
chunk, are read once.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import itertools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from keel.core.config import DatasetConfig
from keel.core.errors import DatasetError
from keel.core.io import reading as reading_errors
from keel.core.streams import file_sha256
from keel.data.profile import ParsedTable
from keel.data.tables import (UTF8_BOM, check_unique_columns, column_kind, parse_pixel_csv, parse_pixel_table,
                              read_csv_table)

BATCH_ROWS = 4096  # lines (CSV) or rows (parquet) per chunk: ~12 MB of Sign-MNIST text, ~3 MB of pixels
SKIPPED_TEXT = 60  # characters kept of a line that cannot be parsed (quarantine.csv quotes this many)
_READ = 1 << 20
_GZIP = b"\x1f\x8b"


@dataclass(frozen=True)
class Reading:
    """How chunks are parsed: the whole file's type of each column the chunks disagreed on, and
    whether the whole file's pixels read as floats (some chunk held a missing or non-integer one)."""

    forced: dict = field(default_factory=dict)
    float_pixels: bool = False

    @property
    def plain(self) -> bool:  # every chunk reads as the whole file
        return not self.forced and not self.float_pixels


PLAIN = Reading()


class Signatures:
    """What each chunk's parse says of the whole file: every column's kinds of type, and
    whether its pixels read as integers or floats (chunks without rows say nothing)."""

    def __init__(self, config: DatasetConfig, id_column: str | None):
        self.others = {config.label_column, config.group_column, id_column}
        self.kinds: dict[str, set[str]] = {}  # column: its kinds of type
        self.types: dict[str, pa.DataType] = {}  # kind: a type of that kind
        self.float_pixels: set[bool] = set()

    def add(self, parsed: ParsedTable) -> None:
        table = parsed.table
        if table is None or not table.num_rows:
            return
        for column in table.schema:
            kind = _kind(column.type)
            self.kinds.setdefault(column.name, set()).add(kind)
            self.types.setdefault(kind, column.type)
        pixels = [column for name, column in zip(table.column_names, table.columns) if name not in self.others]
        self.float_pixels.add(not all(pa.types.is_integer(c.type) and c.null_count == 0 for c in pixels))

    def whole_file(self) -> Reading | None:
        """The reading that parses every chunk as the whole file parses, or None when every
        chunk already did."""
        forced = {name: _widest(kinds, self.types) for name, kinds in self.kinds.items() if len(kinds) > 1}
        if not forced and len(self.float_pixels) < 2:
            return None
        return Reading(forced, True in self.float_pixels)


def _kind(arrow_type: pa.DataType) -> str:
    """A column type as Arrow's CSV inference ranks it (int16 and int64 read the same values)."""
    kind = column_kind(arrow_type)
    return kind if kind != "text" or pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) \
        else str(arrow_type)


def _widest(kinds: set[str], types: dict[str, pa.DataType]) -> pa.DataType:
    """The type Arrow gives a whole column whose chunks read as `kinds`: nulls fit any type,
    integers widen to floats, anything else mixed is text."""
    rest = kinds - {"null"}
    if rest <= {"integer"}:
        return pa.int64()
    if rest <= {"integer", "float"}:
        return pa.float64()
    return types[rest.pop()] if len(rest) == 1 else pa.string()


def _read_as(table: pa.Table, reading: Reading, config: DatasetConfig, id_column: str | None,
             url: str, header: list[str] | None) -> ParsedTable:
    """parse_pixel_table, with the whole file's float pixels when `reading` says so: one
    integer pixel column read as float makes pixel_matrix take its float path, as a whole file
    with one missing pixel does; the rows as read and their kinds stay the table's own."""
    others = (config.label_column, config.group_column, id_column)
    names, present = header if header is not None else table.column_names, set(table.column_names)
    cast = next((c for c in names if c not in others and c in present
                 and pa.types.is_integer(table.column(c).type)), None) if reading.float_pixels else None
    if cast is None:
        return parse_pixel_table(url, table, config, "incoming", id_column, header)
    position = table.column_names.index(cast)
    floats = table.set_column(position, cast, table.column(cast).cast(pa.float64()))
    parsed = parse_pixel_table(url, floats, config, "incoming", id_column, header)
    parsed.table = table.select(parsed.table.column_names)
    parsed.kinds = {c: k for c in parsed.kinds.keys() | {cast}
                    if (k := column_kind(table.column(c).type)) != "integer"}
    return parsed


def _parse_csv(url: str, text: bytes, header: list[str], config: DatasetConfig, id_column: str | None,
               reading: Reading) -> ParsedTable:
    """One chunk's rows, parsed as keel.data.tables.parse_pixel_csv parses a whole file (or
    with the whole file's types, `reading`); lines count from the chunk's first."""
    if reading.plain:
        return parse_pixel_csv(url, text, config, "incoming", id_column)
    try:
        table, skipped, lines = read_csv_table(text, reading.forced or None)
    except pa.ArrowInvalid as exc:
        raise DatasetError(f"{url}: not a readable CSV table ({str(exc).strip().splitlines()[0]}); "
                           "fix that row or re-export the file") from None
    parsed = _read_as(table, reading, config, id_column, url, header)
    parsed.skipped = skipped
    parsed.profile["line"] = lines
    return parsed


class WholeRows:
    """A file read whole (IDX, gzipped parquet): one chunk, as parsed."""

    def __init__(self, url: str, parsed: ParsedTable, sha: str, fmt: str):
        self.url, self.parsed, self._sha, self.format = url, parsed, sha, fmt
        self.chunk_rows = [len(parsed.profile)]

    def chunks(self, reading=PLAIN, wanted=None, last=None):
        yield self.parsed if wanted is None or wanted(0) else None

    def sha256(self) -> str:
        return self._sha


class _Hashing:
    """A binary file that feeds every byte read from it to `digest`."""
    def __init__(self, handle, digest):
        self.handle, self.digest = handle, digest

    def read(self, n: int = -1) -> bytes:
        data = self.handle.read(n)
        self.digest.update(data)
        return data


def _line_runs(blocks: Iterator[bytes], first: int, size: int) -> Iterator[list[bytes]]:
    """The text as runs of whole lines, each as the pieces that make it: `first` lines, then
    `size` lines each (the last run whatever is left, a last line without its newline too)."""
    pending, have, want = [], 0, first
    for block in blocks:
        while block:
            count = block.count(b"\n")
            if have + count < want:
                pending.append(block)
                have += count
                break
            cut = -1
            for _ in range(want - have):
                cut = block.index(b"\n", cut + 1)
            pending.append(block[:cut + 1])
            yield pending
            pending, have, want, block = [], 0, size, block[cut + 1:]
    if pending:
        yield pending


class CsvRows:
    """A CSV file (gzip or not, by its magic bytes) in runs of `batch_rows` lines."""

    format = "csv"

    def __init__(self, url: str, config: DatasetConfig, id_column: str | None, batch_rows: int = BATCH_ROWS):
        self.url, self.config, self.id_column, self.batch_rows = url, config, id_column, batch_rows
        self.chunk_rows: list[int] = []
        self._sha: str | None = None
        self._checks: list[int] = []  # crc32 of each run's text: the second pass checks it reads the same file

    def sha256(self) -> str:
        return self._sha or file_sha256(self.url)

    def _blocks(self, digest) -> Iterator[bytes]:
        with reading_errors(self.url), fsspec.open(self.url, "rb") as handle:
            gzipped = handle.read(2) == _GZIP
            handle.seek(0)
            raw = _Hashing(handle, digest)
            if not gzipped:
                while block := raw.read(_READ):
                    yield block
                return
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
            try:
                while block := stream.read(_READ):
                    yield block
            except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                raise DatasetError(f"{self.url}: the gzip stream is truncated or corrupt ({exc}); copy the file again") from None
            while raw.read(_READ):  # whatever follows the gzip stream counts in the file's sha256
                pass

    def chunks(self, reading=PLAIN, wanted=None, last=None):
        """Every chunk (parsed when `wanted`, else None) up to chunk `last`. A full pass records
        the file's sha256 and each chunk's row count; a partial one checks that each run of
        lines it reads is the one the full pass read."""
        full = wanted is None and last is None
        digest = hashlib.sha256()
        runs = _line_runs(self._blocks(digest), 1 + self.batch_rows, self.batch_rows)
        first = b"".join(next(runs, []))
        first = first[len(UTF8_BOM):] if first.startswith(UTF8_BOM) else first
        while not first.strip(b"\r\n") and (more := next(runs, None)) is not None:
            first += b"".join(more)  # the header (the first line that is not blank) must be in the first run
        end = first.find(b"\n")
        header = [c.strip() for c in next(csv.reader([(first if end < 0 else first[:end]).decode("utf-8", "replace").strip()]), [])]
        check_unique_columns(self.url, header)
        body = first.lstrip(b"\r\n")  # the header as Arrow reads it: the first line that is not blank
        prefix = (body if (cut := body.find(b"\n")) < 0 else body[:cut]) + b"\n"
        counts, checks, rows_before, line = [], [], 0, first.count(b"\n") + 1
        for index, pieces in enumerate(itertools.chain([[first]], runs)):
            checks.append(functools.reduce(lambda crc, piece: zlib.crc32(piece, crc), pieces, 0))
            if not full and (index >= len(self._checks) or checks[-1] != self._checks[index]):
                raise DatasetError(f"{self.url}: the file changed while it was being validated; validate it again "
                                   "once it is complete")
            parsed = None
            if wanted is None or wanted(index):
                text = b"".join(pieces if index == 0 else [prefix, *pieces])
                parsed = _parse_csv(self.url, text, header, self.config, self.id_column, reading)
                parsed.header, text = header, None
                _renumber(parsed, rows_before, 0 if index == 0 else line - 2)
            counts.append(len(parsed.profile) if full else self.chunk_rows[index])
            rows_before += counts[-1]
            line += sum(piece.count(b"\n") for piece in pieces) if index else 0
            del pieces
            yield parsed
            if last is not None and index >= last:
                return
        if full:
            self.chunk_rows, self._checks, self._sha = counts, checks, digest.hexdigest()


def _renumber(parsed: ParsedTable, rows_before: int, line_offset: int) -> None:
    """A chunk's rows and lines numbered as in the whole file; an unparsable line's text cut
    to what the report quotes."""
    profile = parsed.profile
    if len(profile):
        profile["row"] = profile["row"].to_numpy() + rows_before
        profile["line"] = profile["line"].to_numpy() + line_offset
    for item in parsed.skipped:
        item["line"] += line_offset
        item["text"] = item["text"][:SKIPPED_TEXT]


class ParquetRows:
    """A parquet file in record batches of `batch_rows` rows (a row's line is its row number)."""

    format = "parquet"

    def __init__(self, url: str, config: DatasetConfig, id_column: str | None, batch_rows: int = BATCH_ROWS):
        self.url, self.config, self.id_column, self.batch_rows = url, config, id_column, batch_rows
        self.chunk_rows: list[int] = []
        self._sha: str | None = None
        self._shape: tuple | None = None  # rows, row groups and footer size: a second pass checks them

    def sha256(self) -> str:
        self._sha = self._sha or file_sha256(self.url)  # read by row groups, not front to back: hashed apart
        return self._sha

    def chunks(self, reading=PLAIN, wanted=None, last=None):
        full = wanted is None and last is None
        with reading_errors(self.url), fsspec.open(self.url, "rb") as handle:
            source = self._guarded(lambda: pq.ParquetFile(handle))
            meta = source.metadata
            shape = (meta.num_rows, meta.num_row_groups, meta.serialized_size)
            if not full and shape != self._shape:
                raise DatasetError(f"{self.url}: the file changed while it was being validated; validate it again "
                                   "once it is complete")
            batches = source.iter_batches(batch_size=self.batch_rows)
            counts, rows_before, index = [], 0, 0
            while (batch := self._guarded(lambda: next(batches, None))) is not None or index == 0:
                parsed = None
                if wanted is None or wanted(index):
                    table = pa.Table.from_batches([batch]) if batch is not None else source.schema_arrow.empty_table()
                    parsed = _read_as(table, reading, self.config, self.id_column, self.url, None)
                    _renumber(parsed, rows_before, 0)
                    parsed.profile["line"] = parsed.profile["row"]  # no header line: the record number
                counts.append(len(parsed.profile) if full else self.chunk_rows[index])
                rows_before += counts[-1]
                yield parsed
                if batch is None or (last is not None and index >= last):
                    break
                index += 1
        if full:
            self.chunk_rows, self._shape = counts, shape

    def _guarded(self, read):
        try:
            return read()
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"{self.url}: not a readable parquet file ({str(exc).strip().splitlines()[0]}); "
                               "re-export the file") from None


# One landed file's rows: `chunks(reading, wanted, last)` yields each chunk's ParsedTable, rows
# and lines numbered as in the whole file (None for a chunk not `wanted`), up to chunk `last`;
# `chunk_rows`: each chunk's rows, as the last full pass read them; `sha256()`: the file's.
PixelRows = WholeRows | CsvRows | ParquetRows


def open_pixel_rows(url: str, config: DatasetConfig, id_column: str | None,
                    batch_rows: int = BATCH_ROWS) -> PixelRows | None:
    """The file's rows chunk by chunk (CSV, gzip or not; parquet), or None when it is read
    whole (IDX, gzipped parquet). The format is told by the first bytes (decompressed), as
    keel.validation.incoming.read_batch tells it."""
    with reading_errors(url), fsspec.open(url, "rb") as handle:
        head = handle.read(1 << 16)
    gzipped = head[:2] == _GZIP
    if gzipped:
        try:
            head = zlib.decompressobj(31).decompress(head)
        except zlib.error:
            return CsvRows(url, config, id_column, batch_rows)  # reading it says what is wrong
    if head[:4] == b"PAR1":
        return None if gzipped else ParquetRows(url, config, id_column, batch_rows)
    if len(head) >= 4 and head[:2] == b"\x00\x00":
        return None
    return CsvRows(url, config, id_column, batch_rows)
