"""Where a scoring job writes, checked before any work, and how it writes there.

A job writes three files: the predictions (`--output`), the errors beside it
(`<stem>.errors.<fmt>`) and a manifest (`<stem>.manifest.json`: the model version, each input's
sha256 and the summary). The predictions and errors grow batch by batch in temporaries beside
them, and each appears whole (a rename when the job finishes; on fsspec URLs an upload under a
temporary name, then a move). Keel refuses outputs that would destroy or
mislabel data: the input itself, a file inside the input folder, a name whose extension says
another format, and any file there that no manifest of Keel's names.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import NamedTuple

import fsspec
import pandas as pd

from keel.core.atomic import atomic_path, ensure_writable_folder, folder_lock, put_atomic, writing_into
from keel.core.errors import KeelError, OutputError
from keel.core.io import exists, is_remote, local_path, read_bytes
from keel.core.spool import FrameSpool

FORMATS = ("parquet", "csv", "jsonl")
ERROR_COLUMNS = ["input_file", "row", "id", "column", "value", "reason"]
# Output extensions Keel knows and the --format each one means. A name that ends in one of them
# (a final .gz aside: gzip, for csv and jsonl) must match --format; other names are allowed.
OUTPUT_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                     ".json": "jsonl"}


class Outputs(NamedTuple):
    """Where one job writes (local paths or fsspec URLs, `{date}` expanded), and the manifest
    of the Keel job that wrote there before (None when there is no earlier output)."""

    output: str
    errors: str
    manifest: str
    previous: dict | None = None

    @property
    def remote(self) -> bool:
        return is_remote(self.output)


def expand_output(output: str | Path, when: dt.datetime | None = None) -> str:
    """`output` with `{date}` replaced by the scoring day (UTC, YYYY-MM-DD): one file per day
    for a scheduled job."""
    when = when or dt.datetime.now(dt.timezone.utc)
    return str(output).replace("{date}", when.strftime("%Y-%m-%d"))


def sibling_paths(output: Path, fmt: str) -> tuple[Path, Path]:
    """The errors file and the manifest that go beside `output` (the errors gzipped too when
    the output's name ends in .gz)."""
    gz = ".gz" if fmt != "parquet" and output.name.lower().endswith(".gz") else ""
    name = output.name[: len(output.name) - len(gz)]
    stem = name[: -len(f".{fmt}")] if name.endswith(f".{fmt}") else name
    return output.with_name(f"{stem}.errors.{fmt}{gz}"), output.with_name(f"{stem}.manifest.json")


def output_urls(output: str | Path, fmt: str) -> tuple[str, str, str]:
    """(predictions, errors, manifest): local paths or fsspec URLs, `{date}` expanded."""
    output_url = expand_output(output)
    errors_url, manifest_url = (str(p) for p in sibling_paths(Path(output_url), fmt))
    if "://" in output_url:  # Path() folds the // of a URL
        errors_url, manifest_url = (output_url.rsplit("/", 1)[0] + "/" + Path(p).name for p in (errors_url, manifest_url))
    return output_url, errors_url, manifest_url


def format_of(output: str | Path) -> str | None:
    """The format an output's name implies (".csv.gz": csv), or None for a name Keel does not know."""
    name = str(output).rsplit("/", 1)[-1].lower().removesuffix(".gz")
    return next((fmt for ext, fmt in OUTPUT_EXTENSIONS.items() if name.endswith(ext)), None)


def check_format(output: str, fmt: str) -> None:
    """Refuses a name that would mislabel the file: a known extension of another format, or
    .gz on parquet (which is not gzip)."""
    name = output.rsplit("/", 1)[-1]
    gz = name.lower().endswith(".gz")
    implied = format_of(output)
    if implied is not None and implied != fmt:
        base = name[:-3] if gz else name
        ext = next(e for e in OUTPUT_EXTENSIONS if base.lower().endswith(e))
        raise OutputError(f"{output}: the name ends in {ext}{'.gz' if gz else ''} but --format is {fmt}, so the file "
                          f"would be mislabelled; pass --format {implied}, or name it {base[:-len(ext)]}.{fmt}")
    if gz and fmt == "parquet":
        raise OutputError(f"{output}: the name ends in .gz but --format parquet does not write gzip; drop the .gz, "
                          "or pass --format csv or jsonl for a gzipped file")


def check_output(input_path: str | Path, output: str | Path, fmt: str) -> Outputs:
    """Refuses, before any work, outputs that would destroy or mislabel data, and local output
    folders that cannot be written; returns where the job writes, with the earlier job's manifest.

    Refused: an unknown format; a name whose extension says another format (`check_format`);
    an output (or its errors file or manifest) that is the input file, or lies inside the input
    folder being scored; an output that is a folder; a folder that cannot be created or written
    (or would be a missing drive's mount point); an existing output or errors file that no Keel
    manifest beside it names (a file Keel did not write).
    """
    if fmt not in FORMATS:
        raise KeelError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    urls = output_urls(output, fmt)
    check_format(urls[0], fmt)
    for url in urls:
        _refuse_input(input_path, url)
    if is_remote(urls[0]):
        return Outputs(*urls, _previous_job(*urls))
    path = local_path(urls[0])
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; --output must name a file, e.g. {path / f'predictions.{fmt}'}")
    ensure_writable_folder(path.parent, "choose an --output in a folder you can write to")
    with folder_lock(path.parent):  # not while another job puts its three files in place
        return Outputs(*urls, _previous_job(*urls))


def _previous_job(output_url: str, errors_url: str, manifest_url: str) -> dict | None:
    """The manifest of the Keel job that wrote `output_url` (None when there is no output).
    Raises when a file there is not Keel's: a manifest Keel did not write, or a predictions or
    errors file that no manifest beside it names (Keel replaces only what an earlier Keel job
    wrote, never a user's file)."""
    manifest = None
    if exists(manifest_url):
        try:
            manifest = json.loads(read_bytes(manifest_url))
        except (ValueError, KeelError):
            manifest = None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("summary"), dict):
            raise OutputError(f"{manifest_url}: exists and is not a manifest Keel wrote; choose another --output, "
                              "or move that file away")
    summary = manifest["summary"] if manifest else {}
    present = {}
    for url, role in ((output_url, "output"), (errors_url, "errors")):
        present[role] = exists(url)
        if present[role] and str(summary.get(role, "")).rsplit("/", 1)[-1] != url.rsplit("/", 1)[-1]:
            raise OutputError(f"{url}: exists and was not written by Keel (no manifest {manifest_url.rsplit('/', 1)[-1]} "
                              "beside it names it), and Keel does not replace files it did not write; choose another "
                              "--output, or move that file away")
    return manifest if present["output"] else None


def _refuse_input(input_path: str | Path, url: str) -> None:
    """Raises when writing `url` would replace the input file or write into the input folder."""
    if is_remote(url) or is_remote(input_path):
        if not (is_remote(url) and is_remote(input_path)):
            return
        (out_fs, out), (in_fs, source) = (fsspec.core.url_to_fs(str(u)) for u in (url, input_path))
        if out_fs.protocol != in_fs.protocol:
            return
        out, source = out.rstrip("/"), source.rstrip("/")
        same, inside = out == source, out.startswith(source + "/")
    else:
        out, source = local_path(url).resolve(), local_path(input_path).resolve()
        same = out == source or (out.exists() and source.exists() and os.path.samefile(out, source))
        inside = source.is_dir() and any(parent == source or (parent.exists() and os.path.samefile(parent, source))
                                          for parent in out.parents)
    if same:
        raise OutputError(f"{url}: the output is the input file {input_path}, and writing it would replace the data "
                          "being scored; choose another --output path")
    if inside:
        raise OutputError(f"{url}: the output lies inside the input folder {input_path}, which is being scored; "
                          "choose an --output outside that folder")


class ResultFiles:
    """Where one job's predictions and errors go as its batches are scored, and how they are
    put in place when it finishes (a context manager: whatever is left when it exits is removed).

    Each output grows in Keel temporaries beside it (keel.core.spool.FrameSpool); `commit`
    finishes them and renames them into place with the manifest, under the folder's lock, so
    two jobs writing the same output never mix (the last one wins entirely) and a killed job
    leaves nothing under the real names, only temporaries the next job there removes. fsspec
    URLs are staged in a local folder, then each file is uploaded under a temporary name and
    moved into place."""

    def __init__(self, outputs: Outputs, fmt: str):
        self.outputs, self.fmt, self.stack = outputs, fmt, ExitStack()

    def __enter__(self) -> ResultFiles:
        if self.outputs.remote:
            staging = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="keel-scoring-")))
            self.files = [staging / url.rsplit("/", 1)[-1] for url in self.outputs[:3]]
        else:
            self.files = [local_path(url) for url in self.outputs[:3]]
        self.predictions, self.errors = (FrameSpool(path, self.fmt, self.stack) for path in self.files[:2])
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def add(self, predictions: pd.DataFrame, errors: pd.DataFrame) -> None:
        """Appends one batch's predictions and errors (a full disk is the user's to fix, not an
        outage to retry)."""
        with self._writing():
            self.predictions.append(predictions)
            self.errors.append(errors)

    def commit(self, manifest: str) -> None:
        """Puts the predictions, errors and `manifest` (text) in place."""
        output, errors, manifest_path = self.files
        with self._writing():
            finished = [self.predictions.finish(), self.errors.finish()]
            if self.outputs.remote:
                for tmp, path in zip(finished, (output, errors)):
                    os.replace(tmp, path)
                manifest_path.write_text(manifest)
                for path, url in zip(self.files, self.outputs[:3]):
                    put_atomic(path, url)
                return
            with folder_lock(output.parent):
                for tmp, path in zip(finished, (output, errors)):
                    os.replace(tmp, path)
                with atomic_path(manifest_path) as tmp:
                    tmp.write_text(manifest)

    def _writing(self):
        if self.outputs.remote:
            return nullcontext()
        return writing_into(self.files[0].parent, "free space there or choose another --output")
