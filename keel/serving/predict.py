"""Batch scoring: pixel-row files in, prediction files out, bad rows to an errors file.

One job loads the model once, reads each input file once, checks every row against what the
model was trained on, scores the good rows in large batches, and writes the output, the
errors and a manifest atomically (temporary file, then rename). A manifest that matches the
inputs' sha256 and the model version makes a re-run return the existing output.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from keel.data.datasets import check_unique_columns, pixel_matrix, strip_bom
from keel.core.errors import DatasetError, KeelError, OutputError
from keel.core.io import (atomic_path, decompress, ensure_writable_folder, exists, find_visible, folder_lock, is_remote,
                     list_files, local_path, put_atomic, read_bytes, sha256_hex, writing_into)

if TYPE_CHECKING:
    from keel.tracking.registry import ModelRef

FORMATS = ("parquet", "csv", "jsonl")
INPUT_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
ERROR_COLUMNS = ["input_file", "row", "id", "column", "value", "reason"]


@dataclass
class ScoreSummary:
    model: dict
    output: str
    errors: str
    manifest: str
    files: list[dict]
    rows_scored: int
    rows_rejected: int
    accuracy: float | None
    labelled_rows: int
    reused: bool
    seconds: float
    model_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def text(self) -> str:
        head = "reused existing output (same inputs and model version; --force recomputes)" if self.reused \
            else f"scored in {self.seconds:.2f} s"
        lines = [f"{self.rows_scored} rows scored, {self.rows_rejected} rejected, from {len(self.files)} file(s); {head}",
                 f"model   {self.model['name']} v{self.model['version']} (run {self.model['run_id']})",
                 f"output  {self.output}"]
        if self.rows_rejected:
            lines.append(f"errors  {self.errors}")
        if self.accuracy is not None:
            lines.append(f"accuracy {self.accuracy:.4f} on {self.labelled_rows} labelled rows")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def input_files(path: str | Path) -> list[str]:
    """The files to score: `path` itself, or every CSV/parquet file in the folder `path`
    (local paths or fsspec URLs)."""
    files = list_files(path, INPUT_SUFFIXES)
    if files == []:
        raise DatasetError(f"{path}: the folder holds no .csv, .csv.gz or .parquet files to score")
    if files is None:
        if not exists(path):
            raise DatasetError(f"{path}: no such file or folder")
        files = [str(path)]
    return files


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


# Output extensions Keel knows and the --format each one means. A name that ends in one of them
# (a final .gz aside: gzip, for csv and jsonl) must match --format; other names are allowed.
OUTPUT_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                     ".json": "jsonl"}


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


def check_output(input_path: str | Path, output: str | Path, fmt: str) -> tuple[str, str, str]:
    """Refuses, before any work, outputs that would destroy or mislabel data, and local output
    folders that cannot be written; returns (predictions, errors, manifest) as `output_urls`.

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
    if not is_remote(urls[0]):
        path = local_path(urls[0])
        if path.is_dir():
            raise OutputError(f"{path}: is a folder; --output must name a file, e.g. {path / f'predictions.{fmt}'}")
        ensure_writable_folder(path.parent, "choose an --output in a folder you can write to")
    _refuse_foreign_files(*urls)
    return urls


def _refuse_foreign_files(output_url: str, errors_url: str, manifest_url: str) -> None:
    """Raises when the predictions or errors file exists and no manifest of Keel's beside it
    names it: Keel replaces only what an earlier Keel job wrote, never a user's file."""
    manifest = None
    if exists(manifest_url):
        try:
            manifest = json.loads(read_bytes(manifest_url)).get("summary")
        except (ValueError, AttributeError, KeelError):
            manifest = None
        if not isinstance(manifest, dict):
            raise OutputError(f"{manifest_url}: exists and is not a manifest Keel wrote; choose another --output, "
                              "or move that file away")
    for url, role in ((output_url, "output"), (errors_url, "errors")):
        if exists(url) and not (manifest and str(manifest.get(role, "")).rsplit("/", 1)[-1] == url.rsplit("/", 1)[-1]):
            raise OutputError(f"{url}: exists and was not written by Keel (no manifest {manifest_url.rsplit('/', 1)[-1]} "
                              "beside it names it), and Keel does not replace files it did not write; choose another "
                              "--output, or move that file away")


def _refuse_input(input_path: str | Path, url: str) -> None:
    """Raises when writing `url` would replace the input file or write into the input folder."""
    if is_remote(url) or is_remote(input_path):
        if not (is_remote(url) and is_remote(input_path)):
            return
        import fsspec

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


def check_rows(table: pa.Table, columns: list[str], file: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, pd.DataFrame]:
    """(good-row mask, uint8 pixels of the good rows, one error row per problem)."""
    n = table.num_rows
    present = set(table.column_names)
    missing = [c for c in columns if c not in present]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        errors = pd.DataFrame({"input_file": file, "row": np.arange(1, n + 1), "id": ids, "column": missing[0],
                               "value": "", "reason": f"missing column(s) {shown}"})
        return np.zeros(n, dtype=bool), None, errors
    matrix, non_numeric = pixel_matrix(table, columns)
    nan = np.isnan(matrix) if matrix.dtype.kind == "f" else None
    problems = {
        "out of range (pixels are 0-255)": (matrix < 0) | (matrix > 255),
    }
    if nan is not None:
        text = non_numeric if non_numeric is not None else np.zeros_like(nan)
        problems = {
            "empty pixel": nan & ~text,
            "not a number": text,
            "not a whole number": ~nan & (matrix != np.round(matrix)),
            **problems,
        }
    good = np.ones(n, dtype=bool)
    records = []
    for reason, mask in problems.items():
        rows = np.flatnonzero(mask.any(axis=1))
        if not len(rows):
            continue
        good[rows] = False
        first = mask[rows].argmax(axis=1)
        counts = mask[rows].sum(axis=1)
        for row, col, count in zip(rows, first, counts):
            value = "" if reason in ("empty pixel", "not a number") else f"{matrix[row, col]:g}"
            records.append((file, int(row) + 1, ids[row], columns[col], value,
                            reason + (f" ({count} pixels)" if count > 1 else "")))
    errors = pd.DataFrame.from_records(records, columns=ERROR_COLUMNS)
    pixels = matrix[good].astype(np.uint8) if good.any() else np.zeros((0, len(columns)), dtype=np.uint8)
    return good, pixels, errors


def score_files(client, reference: str, input_path: str | Path, output: str | Path, fmt: str = "parquet",
                force: bool = False, id_column: str = "id", batch_size: int = 1024) -> ScoreSummary:
    """Scores every row of the input file(s) with one registered model version."""
    started = time.perf_counter()
    output_url, errors_url, manifest_url = check_output(input_path, output, fmt)  # before any work
    remote = is_remote(output_url)
    from keel.tracking.registry import resolve_model  # mlflow, torch models: imported when a job scores

    model = resolve_model(client, reference)
    files, refused = image_files(input_path) if model.image_model else (input_files(input_path), {})
    blobs = [(path, read_bytes(str(path))) for path in files]
    file_info = [{"file": str(path), "sha256": sha256_hex(data)} for path, data in blobs]
    identity = {"model": {"name": model.name, "version": model.version, "run_id": model.run_id},
                "inputs": file_info, "format": fmt}
    if refused:  # entries the photo listing refused (links out of the folder...): part of what was asked
        identity["refused"] = [{"file": path, "reason": reason} for path, reason in refused.items()]

    if not force:
        previous = _previous_manifest(output_url, manifest_url, remote)
        if previous is not None and {k: previous.get(k) for k in identity} == identity:
            return ScoreSummary(**{**previous["summary"], "reused": True, "seconds": time.perf_counter() - started})

    if model.image_model:
        predictions, errors, model_seconds = _score_photos(model, blobs, file_info, input_path, batch_size, refused)
        return _finish(identity, predictions, errors, 0, 0, model_seconds, started,
                       output_url, errors_url, manifest_url, remote, fmt)

    from concurrent.futures import ThreadPoolExecutor

    from keel.tracking.registry import load_registered
    from keel.training.train import predict_logits

    with ThreadPoolExecutor(max_workers=1) as pool:
        # Once per job; it loads while Arrow (which releases the GIL) parses the first file.
        loading = pool.submit(load_registered, model.uri)
        tables = [read_table(path, data) for path, data in blobs[:1]]
        classifier = loading.result()
    config = classifier.config
    labels = np.asarray(config["labels"])
    names = np.asarray(config["class_names"])
    scored_at = dt.datetime.now(dt.timezone.utc).isoformat()
    outputs, error_frames = [], []
    correct = labelled = 0
    model_seconds = 0.0
    for index, ((path, data), info) in enumerate(zip(blobs, file_info)):
        table = tables[0] if index == 0 else read_table(path, data)
        n = table.num_rows
        ids = (np.asarray(table.column(id_column).to_pylist(), dtype=object) if id_column in table.column_names
               else np.arange(1, n + 1))
        good, pixels, errors = check_rows(table, config["pixel_columns"], str(path), ids)
        error_frames.append(errors)
        rows = np.flatnonzero(good)
        top_p, top_i = _no_scores(len(names))  # no good row: the same columns and types, no rows
        if len(rows):
            image = config["image"]
            images = torch.from_numpy(pixels.reshape(-1, image["height"], image["width"], image["channels"])).permute(0, 3, 1, 2)
            tick = time.perf_counter()
            logits = predict_logits(classifier.model, images.contiguous(), classifier.device, classifier.precision, batch_size)
            probabilities = torch.softmax(logits, dim=1)
            top_p, top_i = probabilities.topk(min(3, probabilities.shape[1]), dim=1)
            model_seconds += time.perf_counter() - tick
            top_p, top_i = top_p.cpu().numpy(), top_i.cpu().numpy()
        frame = pd.DataFrame({
            "id": ids[rows],
            "row": rows + 1,
            "predicted_label": labels[top_i[:, 0]],
            "class_name": names[top_i[:, 0]],
            "confidence": top_p[:, 0],
        })
        for k in range(top_i.shape[1]):
            frame[f"top{k + 1}_class"] = names[top_i[:, k]]
            frame[f"top{k + 1}_probability"] = top_p[:, k]
        label_column = config.get("label_column", "label")
        if label_column in table.column_names:
            truth = (pd.to_numeric(pd.Series(table.column(label_column).to_pylist()), errors="coerce").to_numpy()[rows]
                     if n else np.zeros(0, dtype=np.int64))  # a header-only file: typed as integer labels are
            frame["true_label"] = truth
            known = np.isin(truth, labels)
            labelled += int(known.sum())
            correct += int((truth[known] == frame["predicted_label"].to_numpy()[known]).sum())
        frame["model_name"] = model.name
        frame["model_version"] = model.version
        frame["model_run_id"] = model.run_id
        frame["input_file"] = str(path)
        frame["input_sha256"] = info["sha256"]
        frame["scored_at"] = scored_at
        outputs.append(frame)

    # Files with no good row still give their (empty) frame: a job that scores nothing writes
    # the same columns and types as one that scores rows, not a table without columns.
    scored = [frame for frame in outputs if len(frame)] or outputs
    predictions = pd.concat(scored, ignore_index=True) if scored else pd.DataFrame()
    errors = pd.concat(error_frames, ignore_index=True) if error_frames else pd.DataFrame(columns=ERROR_COLUMNS)
    return _finish(identity, predictions, errors, correct, labelled, model_seconds, started,
                   output_url, errors_url, manifest_url, remote, fmt)


def _finish(identity: dict, predictions: pd.DataFrame, errors: pd.DataFrame, correct: int,
            labelled: int, model_seconds: float, started: float, output_url: str, errors_url: str,
            manifest_url: str, remote: bool, fmt: str) -> ScoreSummary:
    """Writes the predictions, errors and manifest (atomically, locally or to fsspec URLs)."""
    # Typed the same with problems or none (an empty frame's columns would be written as nulls).
    errors = errors.astype({"input_file": "str", "row": "int64", "id": "str", "column": "str", "value": "str",
                            "reason": "str"})
    if "id" in predictions:
        predictions["id"] = predictions["id"].astype(str)
    summary = ScoreSummary(
        model=identity["model"], output=output_url, errors=errors_url, manifest=manifest_url,
        files=identity["inputs"], rows_scored=len(predictions),
        rows_rejected=int(errors.drop_duplicates(["input_file", "row"]).shape[0]),
        accuracy=(correct / labelled) if labelled else None, labelled_rows=labelled, reused=False,
        seconds=time.perf_counter() - started, model_seconds=model_seconds)
    manifest = json.dumps({**identity, "summary": summary.to_dict()}, indent=2, default=str)
    if remote:
        # Written locally first, then each uploaded under a temporary name and moved into place.
        with tempfile.TemporaryDirectory(prefix="keel-scoring-") as staging:
            for frame, url in ((predictions, output_url), (errors, errors_url)):
                local = Path(staging) / url.rsplit("/", 1)[-1]
                write_frame(frame, local, fmt)
                put_atomic(local, url)
            (Path(staging) / "manifest.json").write_text(manifest)
            put_atomic(Path(staging) / "manifest.json", manifest_url)
        return summary
    output, errors_path, manifest_path = (local_path(u) for u in (output_url, errors_url, manifest_url))
    # Each file is renamed into place whole; the lock keeps the three of one job together when
    # two jobs write the same output (the last one wins entirely). A full disk is the user's to
    # fix, not an outage to retry.
    with writing_into(output.parent, "free space there or choose another --output"), folder_lock(output.parent):
        write_frame(predictions, output, fmt)
        write_frame(errors, errors_path, fmt)
        with atomic_path(manifest_path) as tmp:
            tmp.write_text(manifest)
    return summary


def image_files(path: str | Path) -> tuple[list[str], dict[str, str]]:
    """(the photos to score, the entries refused: path -> reason): `path` itself, or every file
    below the folder `path` by the listing rules of image-folder ingest (`keel.core.io.find_visible`:
    hidden names skipped, no link followed out of the folder, no folder link followed)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(path))
    if fs.isdir(root):
        listing = find_visible(fs, root)
        if not listing.files and not listing.quarantined:
            raise DatasetError(f"{path}: the folder holds no files to score")
        if is_remote(path):
            return ([fs.unstrip_protocol(p) for p in listing.files],
                    {fs.unstrip_protocol(p): r for p, r in listing.quarantined.items()})
        return listing.files, listing.quarantined
    if not fs.exists(root):
        raise DatasetError(f"{path}: no such file or folder")
    return [str(path)], {}


def _score_photos(model: ModelRef, blobs: list, file_info: list[dict], input_path, batch_size: int,
                  refused: dict[str, str] | None = None):
    """(predictions, errors, model seconds) for photo files: rows keyed by the path relative to
    the input folder, numbered in path order; files that do not decode, and the entries the
    listing refused (`refused`: path -> reason), go to the errors with their reason."""
    from keel.data.imagefolder import decode
    from keel.tracking.registry import load_registered
    from keel.training.train import predict_logits

    classifier = load_registered(model.uri)
    config = classifier.config
    image = config["image"]
    import fsspec

    fs, stripped = fsspec.core.url_to_fs(str(input_path))
    root = (fs.unstrip_protocol(stripped) if is_remote(input_path) else stripped).rstrip("/")
    good, pixels, errors = [], [], []
    entries = sorted([(str(path), data, info) for (path, data), info in zip(blobs, file_info)]
                     + [(path, None, reason) for path, reason in (refused or {}).items()], key=lambda e: e[0])
    for i, (path, data, info) in enumerate(entries):
        relative = str(path)[len(root) + 1:] if str(path).startswith(root + "/") else Path(str(path)).name
        if data is None:  # refused by the listing; `info` holds the reason
            errors.append({"input_file": str(path), "row": i + 1, "id": relative, "column": "", "value": "",
                           "reason": info})
            continue
        decoded = decode(data, relative, image["height"], image["width"], image["channels"], min_side=1)
        if decoded.pixels is None:
            errors.append({"input_file": str(path), "row": i + 1, "id": relative, "column": "", "value": "",
                           "reason": decoded.reason})
            continue
        good.append((i, relative, info, decoded.notes))
        pixels.append(decoded.pixels)
    model_seconds = 0.0
    labels, names = np.asarray(config["labels"]), np.asarray(config["class_names"])
    top_p, top_i = _no_scores(len(names))  # no photo decoded: the same columns and types, no rows
    if good:
        images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
        tick = time.perf_counter()
        logits = predict_logits(classifier.model, images, classifier.device, classifier.precision, min(batch_size, 256))
        probabilities = torch.softmax(logits, dim=1)
        top_p, top_i = (t.cpu().numpy() for t in probabilities.topk(min(3, probabilities.shape[1]), dim=1))
        model_seconds = time.perf_counter() - tick
    frame = pd.DataFrame({"id": _text([g[1] for g in good]), "row": np.array([g[0] + 1 for g in good], dtype=np.int64),
                          "predicted_label": labels[top_i[:, 0]], "class_name": names[top_i[:, 0]],
                          "confidence": top_p[:, 0]})
    for k in range(top_i.shape[1]):
        frame[f"top{k + 1}_class"] = names[top_i[:, k]]
        frame[f"top{k + 1}_probability"] = top_p[:, k]
    frame["model_name"], frame["model_version"], frame["model_run_id"] = model.name, model.version, model.run_id
    frame["input_file"] = _text([g[2]["file"] for g in good])
    frame["input_sha256"] = _text([g[2]["sha256"] for g in good])
    frame["notes"] = _text([g[3] for g in good])
    frame["scored_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    return frame, pd.DataFrame(errors, columns=ERROR_COLUMNS), model_seconds


def _no_scores(classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k probabilities and class indices for zero rows, typed as the model's are."""
    k = min(3, classes)
    return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)


def _text(values: list) -> pd.Series:
    """A text column typed the same whether it holds rows or none (an empty list is float64)."""
    return pd.Series(values, dtype="str")


def _previous_manifest(output_url: str, manifest_url: str, remote: bool) -> dict | None:
    """The manifest of an earlier job that wrote `output_url`, if both files are there."""
    if remote:
        if exists(output_url) and exists(manifest_url):
            return json.loads(read_bytes(manifest_url))
        return None
    output, manifest = local_path(output_url), local_path(manifest_url)
    with folder_lock(output.parent):
        if output.exists() and manifest.exists():
            return json.loads(manifest.read_text())
    return None


def write_frame(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    """Writes `frame` as parquet, CSV or JSON lines (gzip when the name ends in .gz), atomically.
    Parquet keeps a text column without rows as text (pandas would write it as nulls)."""
    compression = "gzip" if fmt != "parquet" and path.name.lower().endswith(".gz") else None
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            schema = pa.Schema.from_pandas(frame, preserve_index=False)
            for i, column in enumerate(schema):
                if pa.types.is_null(column.type):
                    schema = schema.set(i, column.with_type(pa.string()))
            frame.to_parquet(tmp, index=False, schema=schema)
        elif fmt == "csv":
            frame.to_csv(tmp, index=False, compression=compression)
        else:
            frame.to_json(tmp, orient="records", lines=True, compression=compression)
