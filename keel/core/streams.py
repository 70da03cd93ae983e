"""Tables read and hashed as streams, never whole: a file of any size costs a batch of memory.

`file_sha256` hashes a local path or fsspec URL chunk by chunk. `open_record_batches` reads a
CSV (gzip or not, by magic bytes as keel.core.io.decompress decides) or parquet file as Arrow
record batches of a fixed number of rows: CSV through Arrow's streaming reader on a stream
gunzipped on the fly, parquet by ParquetFile.iter_batches. An unreadable file (truncated gzip,
not a table, not parquet) is a DatasetError of one sentence naming it, as the in-memory readers
say it.

Arrow's streaming CSV reader infers types from its first block and then fails on a later
block that does not fit them (an "abc" in row 200,000 of an integer column): a bad value would
fail the whole job, and the in-memory reader would have read that column as text instead. So a
CSV is read in two ways. The fast one first: every column but the text ones (ids) parsed as
int64 by Arrow's parser, which is what a clean file of pixel rows is, parsed once with no text
kept. At the first value that is not an integer the file is read again from the start, every
column as text, the batches already given skipped, and each later batch's columns typed as the
in-memory reader types a whole column: integers (int64) when every value is one, else numbers
(float64), else text, Arrow's null words ("", "NA", "null"...) as nulls. A value thus reads the
same whichever batch it falls in and whichever way it was read; only the batch's column type can
differ (text in the one batch that holds the "abc"), so consumers read values, never a batch's
schema, and a bad value is one bad row, never a failed job.

The writing side (frames appended to one output file as they come) is keel.core.spool.
"""

from __future__ import annotations

import csv
import hashlib
import io
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from itertools import islice

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

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
        yield from _csv_batches(url, _CsvSource(url, handle, head[:2] == b"\x1f\x8b", digest), batch_rows,
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


class _CsvSource:
    """A CSV file's bytes (gunzipped if `gz`) as chunks, read once or, after a `restart`, again
    from the start. `digest` is fed every byte as stored once: a second pass feeds it only the
    bytes past those the first pass fed, and checks the bytes it reads again against the first
    pass's (if they differ, the file changed between the passes, and the digest is spoiled so
    that it matches no file's hash: the caller's check says the file changed)."""

    def __init__(self, url: str, handle, gz: bool, digest):
        self.url, self.handle, self.gz, self.digest = url, handle, gz, digest
        self.fed, self.again, self.first = 0, None, None

    def restart(self) -> None:
        self.handle.seek(0)
        if self.digest is not None:
            self.again, self.first = hashlib.sha256(), self.digest.copy().hexdigest()

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes (gunzipped if it is gzip), _RAW_READ stored bytes at a time."""
        raw = self._hashed(iter(lambda: self.handle.read(_RAW_READ), b""))
        return _gunzip(self.url, raw) if self.gz else raw

    def _hashed(self, blocks: Iterator[bytes]) -> Iterator[bytes]:
        at = 0
        for block in blocks:
            if self.digest is not None:
                seen = max(0, min(len(block), self.fed - at))  # bytes the first pass fed already
                if seen:
                    self.again.update(block[:seen])
                    if at + seen == self.fed:
                        self._check_again()
                self.digest.update(block[seen:])
                at += len(block)
                self.fed = max(self.fed, at)
            yield block
        if self.again is not None and at < self.fed:  # shorter than the first pass read it
            self.digest.update(b"changed between two reads")

    def _check_again(self) -> None:
        if self.again.hexdigest() != self.first:
            self.digest.update(b"changed between two reads")


def _csv_batches(url: str, source: _CsvSource, batch_rows: int, text: set[str],
                 check_header: Callable[[str, list[str]], None] | None) -> Iterator[pa.RecordBatch]:
    """The fast path first: every column but `text` parsed as int64 by Arrow (a clean pixel
    file: parsed once, no text kept). At the first value that is not an integer, the file is
    read again from the start as text, the batches already given skipped, and typed batch by
    batch from there on (_typed); a file that is not a CSV table fails as the text pass says."""
    given = 0
    try:
        for table in _sliced(_open_csv(url, source, text, check_header), batch_rows):
            given += 1
            yield pa.RecordBatch.from_arrays([c.combine_chunks() for c in table.columns], names=table.column_names)
        return
    except pa.ArrowInvalid:
        pass  # a value that is not an integer, or a broken row (the text pass names it)
    source.restart()
    try:
        for table in islice(_sliced(_open_csv(url, source, None, None), batch_rows), given, None):
            yield _typed(table, text)
    except pa.ArrowInvalid as exc:
        raise DatasetError(f"{url}: not a readable CSV table ({str(exc).splitlines()[0]})") from None


def _open_csv(url: str, source: _CsvSource, text: set[str] | None,
              check_header: Callable[[str, list[str]], None] | None) -> pacsv.CSVStreamingReader:
    """Arrow's streaming reader over the source's bytes: every column as text when `text` is
    None, else those in `text` as text and every other one as int64."""
    chunks = source.chunks()
    names, head = _header(url, chunks)
    if check_header is not None:
        check_header(url, names)
    types = {n: pa.string() if text is None or n in text else pa.int64() for n in names}
    return pacsv.open_csv(_ChunkReader(_prepend(head, chunks)),
                          read_options=pacsv.ReadOptions(block_size=CSV_BLOCK, column_names=names, skip_rows=1),
                          convert_options=pacsv.ConvertOptions(column_types=types))


def _prepend(head: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    yield from chunks


def _sliced(reader: pacsv.CSVStreamingReader, batch_rows: int) -> Iterator[pa.Table]:
    """The reader's rows as tables of `batch_rows` rows (the last shorter; one empty table for
    no rows)."""
    pending, count, given = [], 0, False
    for block in reader:
        pending.append(block)
        count += block.num_rows
        while count >= batch_rows:
            table = pa.Table.from_batches(pending)
            pending, count = [b for b in table.slice(batch_rows).to_batches() if b.num_rows], count - batch_rows
            given = True
            yield table.slice(0, batch_rows)
    if count or not given:
        yield pa.Table.from_batches(pending, schema=reader.schema)


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
