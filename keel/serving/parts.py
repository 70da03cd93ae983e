"""Parts jobs: many input files scored side by side (Dask workers), one part per input file,
and a job manifest that lists every part.

`keel predict --workers N` or `--dask-address ADDRESS` writes into a FOLDER:

- `parts/<input file name>.<fmt>`, with its `.errors.<fmt>` and `.manifest.json`: exactly what
  `score_files(..., output=part)` writes for that one file, so a part whose own manifest
  matches its input's sha256 and the model version is reused, file by file;
- `manifest.json`: every part of the job (input file and sha256, part path and sha256, rows
  scored and rejected, status scored / reused / failed with its reason), written whole;
- `.keel-parts`: the mark that Keel made the folder. A parts job writes only into a new or
  empty folder, or one an earlier parts job marked, never among a user's files.

A file that cannot be read fails its part alone; the others are scored, the job manifest
records the failure, and the job then fails naming the file (PartsFailedError).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import fsspec

from keel.core.atomic import atomic_path, ensure_writable_folder, folder_lock, put_atomic, writing_into
from keel.core.errors import KeelError, OutputError
from keel.core.io import is_remote, local_path, reading
from keel.core.secrets import redact
from keel.serving.inputs import INPUT_SUFFIXES, TEXT_SUFFIXES, input_files
from keel.serving.outputs import FORMATS, expand_output, format_of
from keel.serving.predict import score_files
from keel.serving.pyfunc import Classifier, cached_verified_model

PARTS_FOLDER = "parts"
JOB_MANIFEST = "manifest.json"
PARTS_MARKER = ".keel-parts"
MARKER_TEXT = ("This folder holds the parts of a `keel predict --workers/--dask-address` job (parts/) and its "
               "manifest.json; Keel writes parts jobs only into folders it marked so.\n")
WRITTEN_BY = "keel predict (parts)"  # what tells a job manifest Keel wrote from any other manifest.json


class PartsFailedError(KeelError):
    """Input files that could not be scored (each a user's mistake: a corrupt or unreadable
    file); the other parts were scored and the job manifest lists them all."""


class PartsIncompleteError(RuntimeError):
    """Parts that an error other than a user's mistake (an outage that outlasted the part's
    retries) left unscored; the job manifest lists them, and the same command finishes them."""


def claim_parts_folder(input_path: str, output: str, fmt: str) -> str:
    """The job's output folder (`{date}` expanded), checked before any work and marked as Keel's.

    Refused: an unknown format; a name with a known file extension or an existing file (the
    output is a folder here); a folder whose parts would lie inside the input folder; a
    folder that holds files and no `.keel-parts` mark (Keel did not make it); a
    manifest.json there that is not a job manifest Keel wrote; a folder that cannot be written."""
    if fmt not in FORMATS:
        raise KeelError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    folder = absolute(expand_output(output)).rstrip("/")
    if format_of(folder) is not None:
        raise OutputError(f"{folder}: names a {format_of(folder)} file, but with --workers or --dask-address --output is "
                          "a folder that gets one part per input file; pass a folder name without a file extension")
    _refuse_input_folder(input_path, folder)
    fs, path = fsspec.core.url_to_fs(folder)
    if fs.isfile(path):
        raise OutputError(f"{folder}: is a file, but with --workers or --dask-address --output is a folder that gets "
                          "one part per input file; pass a new or empty folder")
    if not is_remote(folder):
        ensure_writable_folder(local_path(folder), "choose an --output folder you can write to")
    names = {entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False)} if fs.isdir(path) else set()
    if names and PARTS_MARKER not in names:
        raise OutputError(f"{folder}: the folder holds files and Keel did not make it (no {PARTS_MARKER} file there), "
                          "and a parts job never writes among files it did not write; pass a new or empty folder")
    if JOB_MANIFEST in names:
        previous_manifest(folder)  # raises when it is not Keel's
    if PARTS_MARKER not in names:
        _write_text(folder, PARTS_MARKER, MARKER_TEXT)
    return folder


def _refuse_input_folder(input_path: str, folder: str) -> None:
    """Raises when the parts would be written into the input folder being scored (or below it)."""
    parts = f"{folder}/{PARTS_FOLDER}"
    if is_remote(input_path) or is_remote(folder):
        if not (is_remote(input_path) and is_remote(folder)):
            return
        (out_fs, out), (in_fs, source) = (fsspec.core.url_to_fs(u) for u in (parts, str(input_path)))
        out, source = out.rstrip("/"), source.rstrip("/")
        inside = out_fs.protocol == in_fs.protocol and (out == source or out.startswith(source + "/"))
    else:
        out, source = local_path(parts).resolve(), local_path(input_path).resolve()
        inside = out == source or source in out.parents
    if inside:
        raise OutputError(f"{folder}: the parts would be written inside the input folder {input_path}, which is being "
                          "scored; choose an --output folder outside it")


def part_inputs(input_path: str, kind: str) -> list[str]:
    """The files a parts job scores, one part each (local paths absolute): `input_path` itself or
    the files of that folder, as `keel predict` lists them for a model that reads `kind`
    ("pixels", "texts")."""
    if kind == "photos":
        raise KeelError("an image model scores a folder of photos as one table keyed by relative path, not one part "
                        "per file; drop --workers and --dask-address")
    return [absolute(path) for path in input_files(input_path, TEXT_SUFFIXES if kind == "texts" else INPUT_SUFFIXES)]


def absolute(url: str) -> str:
    """A local path made absolute (a worker may run in another folder, or on another machine
    that mounts the same filesystem at the same place); a URL as it is."""
    return url if "://" in url else os.path.abspath(url)


def part_path(folder: str, input_file: str, fmt: str) -> str:
    """Where the part of `input_file` goes: FOLDER/parts/<input file name>.<fmt>."""
    return f"{folder}/{PARTS_FOLDER}/{input_file.rstrip('/').rsplit('/', 1)[-1]}.{fmt}"


def score_part(client, model: dict, input_file: str, folder: str, fmt: str, force: bool, id_column: str,
               loader: Callable[[str], Classifier] = cached_verified_model) -> dict:
    """Scores one input file into its part (or reuses the part an earlier job wrote for the
    same bytes and model version); the part's entry in the job manifest."""
    summary = score_files(client, f"{model['name']}/{model['version']}", input_file, part_path(folder, input_file, fmt),
                          fmt=fmt, force=force, id_column=id_column, loader=loader)
    return {"input_file": input_file, "input_sha256": summary.files[0]["sha256"],
            "part": _relative(folder, summary.output), "errors": _relative(folder, summary.errors),
            "rows_scored": summary.rows_scored, "rows_rejected": summary.rows_rejected,
            "part_sha256": file_sha256(summary.output), "status": "reused" if summary.reused else "scored",
            "model_version": summary.model["version"]}


def failed_part(input_file: str, error: object, model: dict) -> dict:
    """The job manifest's entry for a part that failed with `error` (what its task raised)."""
    user = isinstance(error, KeelError)
    reason = str(error) if user else f"{type(error).__name__}: {error}" if isinstance(error, BaseException) \
        else "the part did not run"
    try:
        sha = file_sha256(input_file)
    except KeelError:  # missing or unreadable: the reason says so
        sha = None
    return {"input_file": input_file, "input_sha256": sha, "part": None, "errors": None, "rows_scored": 0,
            "rows_rejected": 0, "part_sha256": None, "status": "failed", "reason": redact(reason),
            "user_error": user, "model_version": model["version"]}


def write_job_manifest(folder: str, model: dict, input_path: str, fmt: str, files: list[str],
                       outcomes: list) -> dict:
    """Writes FOLDER/manifest.json listing every part of this job, whole, and returns it.
    `outcomes` holds, per input file, the part's entry (score_part) or what made its task fail.
    A re-run rewrites only this file (its parts "reused"); the parts stay as they are."""
    parts = [outcome if isinstance(outcome, dict) else failed_part(file, outcome, model)
             for file, outcome in zip(files, outcomes, strict=True)]
    manifest = {"written_by": WRITTEN_BY, "written_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "folder": folder, "input": input_path, "format": fmt,
                "model": {key: model[key] for key in ("name", "version", "run_id")},
                **{f"parts_{status}": sum(p["status"] == status for p in parts) for status in ("scored", "reused", "failed")},
                "rows_scored": sum(p["rows_scored"] for p in parts),
                "rows_rejected": sum(p["rows_rejected"] for p in parts), "parts": parts}
    previous_manifest(folder)  # still not replacing a file Keel did not write
    _write_text(folder, JOB_MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def previous_manifest(folder: str) -> dict | None:
    """The job manifest an earlier parts job wrote in `folder` (None when there is none);
    raises when a manifest.json there is not one Keel wrote."""
    url = f"{folder}/{JOB_MANIFEST}"
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return None
    try:
        manifest = json.loads(fs.cat_file(path))
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("written_by") != WRITTEN_BY:
        raise OutputError(f"{url}: exists and is not a job manifest Keel wrote, and Keel does not replace files it did "
                          "not write; move that file away or choose another --output folder")
    return manifest


def check_parts(manifest: dict) -> dict:
    """The job's summary (with its text) when every part was scored or reused; otherwise
    raises naming the files whose parts failed (PartsFailedError when each was a user's mistake)."""
    failed = [p for p in manifest["parts"] if p["status"] == "failed"]
    if not failed:
        return manifest | {"text": parts_text(manifest)}
    reasons = "; ".join(p["reason"] if p["reason"].startswith(p["input_file"]) else f"{p['input_file']}: {p['reason']}"
                        for p in failed)
    others = " and the others were" if len(failed) < len(manifest["parts"]) else ""
    head = (f"{len(failed)} of {len(manifest['parts'])} input files could not be scored{others} "
            f"({manifest['folder']}/{JOB_MANIFEST} lists every part): {reasons}")
    if all(p["user_error"] for p in failed):
        raise PartsFailedError(f"{head}; fix or remove those files and run the same command again (the parts "
                               "already scored are reused)")
    raise PartsIncompleteError(f"{head}; run the same command again once the outage is over (the parts already "
                               "scored are reused)")


def parts_text(manifest: dict) -> str:
    """What `keel predict` prints for a parts job."""
    model = manifest["model"]
    return "\n".join([
        f"{manifest['rows_scored']} rows scored, {manifest['rows_rejected']} rejected, from {len(manifest['parts'])} "
        f"file(s): {manifest['parts_scored']} part(s) scored, {manifest['parts_reused']} reused (same inputs and "
        "model version; --force recomputes)",
        f"model   {model['name']} v{model['version']} (run {model['run_id']})",
        f"output  {manifest['folder']}/{PARTS_FOLDER} ({manifest['folder']}/{JOB_MANIFEST} lists every part)"])


def file_sha256(url: str) -> str:
    """The sha256 of a local file or fsspec URL, read a megabyte at a time (parts can be large)."""
    digest = hashlib.sha256()
    with reading(url), fsspec.open(url, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _relative(folder: str, url: str) -> str:
    """`url` relative to the job folder (parts/...): the manifest stays right when the folder moves."""
    return url[len(folder) + 1:] if url.startswith(folder + "/") else url


def _write_text(folder: str, name: str, text: str) -> None:
    """Writes FOLDER/name whole: a temporary beside it, then a rename (an upload, then a move, for URLs)."""
    url = f"{folder}/{name}"
    if is_remote(url):
        with tempfile.TemporaryDirectory(prefix="keel-parts-") as staging:
            (Path(staging) / name).write_text(text)
            put_atomic(Path(staging) / name, url)
        return
    path = local_path(url)
    with writing_into(path.parent, "free space there or choose another --output folder"), folder_lock(path.parent), \
            atomic_path(path) as tmp:
        tmp.write_text(text)

