"""Tables read and hashed as streams, never whole: a file of any size costs a batch of memory.

`file_sha256` hashes a local path or fsspec URL chunk by chunk. `open_record_batches` reads a
CSV (gzip or not, by magic bytes as keel.core.io.decompress decides) or parquet file as Arrow
record batches of a fixed number of rows: CSV through Arrow's streaming reader on a stream
gunzipped on the fly, parquet by ParquetFile.iter_batches. An unreadable file (truncated gzip,
not a table, not parquet) is a DatasetError of one sentence naming it, as the in-memory readers
say it.

Arrow's streaming CSV reader infers types from its first block and then fails on a later
block that does not fit them (an "abc" in row 200,000 of an integer column): a bad value would
fail the whole job, and the in-memory reader would have read that column as text instead. So
every CSV column is read as text and each batch's columns are typed afterwards, batch by batch,
as the in-memory reader types a whole column: integers (int64) when every value is one, else
numbers (float64), else text, Arrow's null words ("", "NA", "null"...) as nulls. A value thus
reads the same whichever batch it falls in; only the batch's column type can differ (text in
the one batch that holds the "abc"), so consumers read values, never a batch's schema, and a
bad value is one bad row, never a failed job.

`FrameSpool` is the writing side: pandas frames appended as they are made, written as one
parquet, CSV or JSON-lines file into a temporary beside the output, for the caller to rename.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from keel.core.atomic import temporary_beside
from keel.core.errors import DatasetError
from keel.core.io import reading

CHUNK = 8 << 20  # bytes read (and hashed) at a time
CSV_BLOCK = 1 << 20  # Arrow's CSV block (its default; a row must fit in one): larger ones cost memory, not speed
_RAW_READ = 1 << 20  # compressed bytes read at a time (about 4 MiB once gunzipped)
_INFLATED = 8 << 20  # at most this many bytes gunzipped at a time
_UTF8_BOM = b"\xef\xbb\xbf"
_NULLS = pa.array(pacsv.ConvertOptions().null_values, pa.string())  # what Arrow reads as null in a typed column


def file_sha256(url: str, chunk: int = CHUNK) -> str:
    """The sha256 of a local path or fsspec URL's bytes as stored (still compressed), read
    `chunk` bytes at a time; unreadable files fail as keel.core.io.read_bytes says."""
    digest = hashlib.sha256()
    with reading(url), fsspec.open(url, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def open_record_batches(url: str, batch_rows: int, *, text_columns: Collection[str] = (),
                        check_header: Callable[[str, list[str]], None] | None = None,
                        digest=None) -> Iterator[pa.RecordBatch]:
    """The rows of a CSV (gzip or not) or parquet file as record batches of `batch_rows` rows
    (the last one shorter; one empty batch, typed, for a file with a header and no rows).

    CSV columns are typed batch by batch (see the module's note), except `text_columns` (ids:
    read as written, "007" stays "007"); `check_header(url, names)` may refuse the header (a
    repeated column name) before any row is read. `digest` (a hashlib object), when given, is
    fed the file's bytes as stored: as they stream by for a CSV, by one more pass after the
    last batch for parquet (read by row groups, not front to back), so the caller can check
    that the file it hashed before is the file it read."""
    with reading(url), fsspec.open(url, "rb") as handle:
        head = handle.read(4)
        handle.seek(0)
        if head == b"PAR1" or str(url).lower().endswith((".parquet", ".pq")):
            yield from _parquet_batches(url, handle, batch_rows)
            if digest is not None:
                handle.seek(0)
                while block := handle.read(CHUNK):
                    digest.update(block)
            return
        chunks = _raw_chunks(handle, digest)
        yield from _csv_batches(url, _gunzip(url, chunks) if head[:2] == b"\x1f\x8b" else chunks, batch_rows,
                                set(text_columns), check_header)


def _parquet_batches(url: str, handle, batch_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        source = pq.ParquetFile(handle)
        empty = True
        for batch in source.iter_batches(batch_size=batch_rows):
            empty = False
            yield batch
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetError(f"{url}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
    if empty:
        yield _empty_batch(source.schema_arrow)


def _empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], type=field.type) for field in schema], schema=schema)


def _raw_chunks(handle, digest) -> Iterator[bytes]:
    """The file's bytes as stored, `_RAW_READ` at a time, each fed to `digest` on the way."""
    while block := handle.read(_RAW_READ):
        if digest is not None:
            digest.update(block)
        yield block


def _gunzip(url: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """gzip decompressed as it streams, at most `_INFLATED` bytes at a time (a file of zeros
    inflates a thousandfold), every member of a concatenated file (`cat a.gz b.gz`); a stream
    that ends inside a member, or is not gzip, fails as keel.core.io.decompress says."""
    inflate, ended = zlib.decompressobj(31), False
    try:
        for chunk in chunks:
            while chunk:
                if ended:  # a member ended: the next bytes begin another
                    inflate, ended = zlib.decompressobj(31), False
                out = inflate.decompress(chunk, _INFLATED)
                if out:
                    yield out
                ended = inflate.eof
                chunk = inflate.unused_data if ended else inflate.unconsumed_tail
        if not ended:
            if out := inflate.flush():  # what the last bytes still held
                yield out
            if not inflate.eof:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
    except (EOFError, zlib.error) as exc:
        raise DatasetError(f"{url}: the gzip stream is truncated or corrupt ({exc}); copy the file again") from None


class _ChunkReader(io.RawIOBase):
    """A read-only binary file over an iterator of byte strings (what Arrow's reader pulls from)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._left, self._at = chunks, memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._at == len(self._left):
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left, self._at = memoryview(chunk), 0
        n = min(len(buffer), len(self._left) - self._at)
        buffer[:n] = self._left[self._at:self._at + n]  # no copy of what is left, as slicing bytes would
        self._at += n
        return n


def _header(url: str, chunks: Iterator[bytes]) -> tuple[list[str], bytes]:
    """(the header's column names, the bytes read so far from the header line on): the
    byte-order mark and blank lines before the header dropped, as Arrow's reader drops them."""
    head = b""
    for chunk in chunks:
        head += chunk
        head = head[len(_UTF8_BOM):] if head.startswith(_UTF8_BOM) else head
        if b"\n" in head.lstrip(b"\r\n") or len(head) > CSV_BLOCK:
            break
    if not head.strip():
        raise DatasetError(f"{url}: the file is empty; nothing to score")
    head = head.lstrip(b"\r\n")
    line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace")
    return next(csv.reader([line]), []), head


def _csv_batches(url: str, chunks: Iterator[bytes], batch_rows: int, text: set[str],
                 check_header: Callable[[str, list[str]], None] | None) -> Iterator[pa.RecordBatch]:
    names, head = _header(url, chunks)
    if check_header is not None:
        check_header(url, names)
    source = _ChunkReader(_prepend(head, chunks))
    try:
        reader = pacsv.open_csv(source, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK, column_names=names,
                                                                        skip_rows=1),
                                convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}))
        pending, count, given = [], 0, False
        for block in reader:
            pending.append(block)
            count += block.num_rows
            while count >= batch_rows:
                table = pa.Table.from_batches(pending)
                pending, count = [b for b in table.slice(batch_rows).to_batches() if b.num_rows], count - batch_rows
                given = True
                yield _typed(table.slice(0, batch_rows), text)
        if count or not given:
            yield _typed(pa.Table.from_batches(pending, schema=reader.schema), text)
    except pa.ArrowInvalid as exc:
        raise DatasetError(f"{url}: not a readable CSV table ({str(exc).splitlines()[0]})") from None


def _prepend(head: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    yield from chunks


def _typed(table: pa.Table, text: set[str]) -> pa.RecordBatch:
    """A batch of text columns typed as the in-memory CSV reader types a column: int64 when
    every value is an integer, else float64 when every one is a number, else text; null words
    as nulls. Columns in `text` stay as written."""
    table = table.combine_chunks()
    columns = [column if name in text else _typed_column(column) for name, column in zip(table.column_names, table.columns)]
    return pa.RecordBatch.from_arrays([c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns],
                                      names=table.column_names)


def _typed_column(column):
    """A text column as int64, else float64 (trimmed, null words as nulls), else that text."""
    try:
        return pc.cast(column, pa.int64())  # the common case, one pass: clean integers
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    trimmed = pc.utf8_trim_whitespace(column)
    column = pc.if_else(pc.is_in(trimmed, value_set=_NULLS), pa.scalar(None, pa.string()), trimmed)
    for kind in (pa.int64(), pa.float64()):
        try:
            return pc.cast(column, kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return column


# ----------------------------------------------------------------------------- writing
# A scoring job's outputs are written as its batches come: each pandas frame is appended to a
# parquet temporary beside the output (named and locked as keel.core.atomic names them, so a
# killed job leaves only temporaries its next run removes), and the finished file appears only
# when the caller renames it into place.


def frame_schema(frame: pd.DataFrame) -> pa.Schema:
    """The Arrow schema parquet stores `frame` with: a column without values (all missing) as
    text, not null (pandas would write it as nulls, and readers would lose its type)."""
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    for i, column in enumerate(schema):
        if pa.types.is_null(column.type):
            schema = schema.set(i, column.with_type(pa.string()))
    return schema


def conform(frame: pd.DataFrame, template: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the columns (in order) and types of `template`: what pd.concat gives for
    its rows when concatenated with frames like the template's (a missing column as missing
    values, an int64 column among float64 ones as float64)."""
    if list(frame.columns) == list(template.columns) and frame.dtypes.equals(template.dtypes):
        return frame
    return frame.reindex(columns=template.columns).astype(template.dtypes.to_dict())


class FrameSpool:
    """Pandas frames appended one by one and written, at `finish`, as one parquet, CSV or JSON
    lines file (gzip when `final`'s name ends in .gz) with the columns and types pd.concat of
    all of them would give (frames without rows count only when no frame has rows), in
    bounded memory.

    Frames go to parquet temporaries beside `final`, a new one only when a frame widens the
    columns or types so far (a float64 label after int64 ones: at most once per column); the
    temporaries live as long as `stack`. `finish` returns the temporary holding the finished
    file, for the caller to rename onto `final` (for parquet it is the first temporary itself
    when nothing widened). Frames are assumed to come row-aligned and indexless."""

    def __init__(self, final: Path, fmt: str, stack: ExitStack):
        self.final, self.fmt, self.stack = Path(final), fmt, stack
        self.template: pd.DataFrame | None = None  # the columns and types so far (no rows)
        self.empty: pd.DataFrame | None = None  # the same over the frames without rows
        self.segments: list[tuple[Path, pd.DataFrame]] = []  # (temporary, its template)
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None

    def append(self, frame: pd.DataFrame) -> None:
        if not len(frame):
            self.empty = frame.iloc[:0] if self.empty is None else pd.concat([self.empty, frame.iloc[:0]])
            return
        template = frame.iloc[:0] if self.template is None else pd.concat([self.template, frame.iloc[:0]])
        if self.template is None or not _same_columns(template, self.template):
            self._close_writer()
            self.template = template
            path = self.stack.enter_context(temporary_beside(self.final))
            self.schema = frame_schema(template)
            self.writer = pq.ParquetWriter(path, self.schema)
            self.segments.append((path, template))
        self.writer.write_table(pa.Table.from_pandas(conform(frame, self.template), schema=self.schema,
                                                     preserve_index=False))

    def finish(self) -> Path:
        """The temporary holding the finished file."""
        self._close_writer()
        template = self.template if self.template is not None else self.empty
        template = template if template is not None else pd.DataFrame()
        if self.fmt == "parquet" and len(self.segments) == 1:
            return self.segments[0][0]
        path = self.stack.enter_context(temporary_beside(self.final))
        if self.fmt == "parquet":
            with pq.ParquetWriter(path, frame_schema(template)) as writer:
                for chunk in self._chunks(template):
                    writer.write_table(pa.Table.from_pandas(chunk, schema=writer.schema, preserve_index=False))
            return path
        gz = self.final.name.lower().endswith(".gz")
        with (gzip.open(path, "wt", encoding="utf-8", newline="") if gz
              else open(path, "w", encoding="utf-8", newline="")) as handle:
            for i, chunk in enumerate(self._chunks(template)):
                if self.fmt == "csv":
                    chunk.to_csv(handle, index=False, header=i == 0)
                elif len(chunk) or not self.segments:
                    chunk.to_json(handle, orient="records", lines=True)
        return path

    def _chunks(self, template: pd.DataFrame) -> Iterator[pd.DataFrame]:
        """Every appended row, `template`'s columns and types, a spool's row group at a time
        (the template itself when no frame had rows)."""
        if not self.segments:
            yield template
        for path, _ in self.segments:
            for batch in pq.ParquetFile(path).iter_batches():
                yield conform(batch.to_pandas(), template)

    def _close_writer(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _same_columns(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return list(a.columns) == list(b.columns) and a.dtypes.equals(b.dtypes)
