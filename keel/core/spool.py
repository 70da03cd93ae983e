"""The writing side of keel.core.streams: pandas frames appended as they are made, written as
one parquet, CSV or JSON-lines file into a temporary beside the output, for the caller to rename."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from keel.core.atomic import temporary_beside

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
