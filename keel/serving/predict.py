"""Batch scoring: input files in, prediction files out, rows that cannot be scored to an errors file.

One job checks its outputs before any work (keel.serving.outputs), hashes its inputs, loads the
model once, and scores every table of rows (keel.serving.inputs: a batch of a file of pixel rows,
a file of texts, or the photos) through one path: the model's modality preprocesses the rows (a
bad row is refused with its reason, never a failed job), the good rows are scored in large
batches, and each table's predictions and errors are appended to the outputs as they come, so
memory stays bounded whatever the inputs' size; the outputs and a manifest are put in place
whole when the job finishes. A manifest that matches the inputs' sha256 and the model version
makes a re-run return the existing output.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from keel.core.prefetch import prefetched
from keel.serving.inputs import Inputs, ScoringTable, scoring_tables
from keel.serving.jobs import ScoreSummary, plan_job
from keel.serving.outputs import ERROR_COLUMNS, Outputs, ResultFiles
from keel.serving.pyfunc import Classifier, load_verified_model
from keel.tracking.registry import ModelRef

PHOTO_BATCH = 256  # photos are large: at most this many in one forward pass
TEXT_BATCH = 256  # texts: attention grows with the square of the length, so not the pixel rows' 1024
TOP_K = 3
# The errors file's types, the same with problems or none (an empty frame's columns would be written as nulls).
ERROR_TYPES = {"input_file": "str", "row": "int64", "id": "str", "column": "str", "value": "str", "reason": "str"}
PROGRESS_SECONDS = 10.0  # a long job says how far it is at most this often ("keel.serving" logger)
_LOG = logging.getLogger("keel.serving")


@dataclass
class _Scored:
    """What scoring a table gave (its predictions and errors), or, gathered over a job's tables,
    how many rows were scored and rejected and how the labelled ones scored."""

    predictions: list[pd.DataFrame] = field(default_factory=list)
    errors: list[pd.DataFrame] = field(default_factory=list)
    correct: int = 0
    labelled: int = 0
    model_seconds: float = 0.0
    rows: int = 0
    rejected: int = 0

    def count(self, other: _Scored) -> None:
        """Adds the counts of `other` (its frames are written, not kept: a row is in one table only)."""
        self.rows += sum(len(frame) for frame in other.predictions)
        self.rejected += sum(int(errors.drop_duplicates(["input_file", "row"]).shape[0]) for errors in other.errors)
        self.correct += other.correct
        self.labelled += other.labelled
        self.model_seconds += other.model_seconds


def score_files(client, reference: str, input_path: str | Path, output: str | Path, fmt: str = "parquet",
                force: bool = False, id_column: str = "id", batch_size: int = 1024,
                loader: Callable[[str], Classifier] = load_verified_model) -> ScoreSummary:
    """Scores every row of the input file(s) with one registered model version, loaded by
    `loader` (a model uri -> Classifier; a worker of many parts passes one that keeps it)."""
    job = plan_job(client, reference, input_path, output, fmt)  # the outputs checked before any work
    reused = None if force else job.reused()
    if reused is not None:
        return reused
    model, outputs = job.model, job.outputs
    batch = min(batch_size, {"photos": PHOTO_BATCH, "texts": TEXT_BATCH}.get(model.inputs, batch_size))
    with ResultFiles(outputs, fmt) as results:
        scored = _score(model, job.inputs, input_path, id_column, batch, loader, results)
        return _finish(job.identity, scored, job.started, outputs, results)


def _score(model: ModelRef, inputs: Inputs, input_path: str | Path, id_column: str, batch_size: int,
           loader: Callable[[str], Classifier], results: ResultFiles) -> _Scored:
    """Loads the model once and scores every table of the inputs with it, each table's
    predictions and errors appended to `results` as they come."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Once per job; it loads while Arrow (which releases the GIL) parses the first batch.
        # Text files are read by the model's text column, so they wait for the model.
        loading = pool.submit(loader, model.uri)
        # Read one table ahead in a thread of its own: the next batch is parsed while this one is scored.
        tables = prefetched(scoring_tables(inputs, input_path, model.inputs, id_column,
                                           lambda: loading.result().config))
        first = list(islice(tables, 1))
        classifier = loading.result()
    scored = _Scored()
    scored_at = dt.datetime.now(dt.timezone.utc).isoformat()
    started = shown = time.perf_counter()
    for table in chain(first, tables):
        part = score_table(table, classifier, model, batch_size, scored_at)
        for predictions, errors in zip(part.predictions, part.errors):
            if "id" in predictions:
                predictions["id"] = predictions["id"].astype(str)
            results.add(predictions, errors.astype(ERROR_TYPES))
        scored.count(part)
        if time.perf_counter() - shown >= PROGRESS_SECONDS:
            shown = time.perf_counter()
            _LOG.info("scored %s rows (%s rejected) in %.0f s, %s rows/s", f"{scored.rows:,}", f"{scored.rejected:,}",
                      shown - started, f"{(scored.rows + scored.rejected) / (shown - started):,.0f}")
    return scored


def score_table(table: ScoringTable, classifier: Classifier, model: ModelRef, batch_size: int,
                scored_at: str) -> _Scored:
    """The predictions of one table's good rows, its errors, and how its labelled rows scored."""
    config = classifier.config
    labels, names = np.asarray(config["labels"]), np.asarray(config["class_names"])
    prepared = classifier.modality.preprocess(table.rows, config)
    good = np.flatnonzero(prepared.good)
    top_p, top_i, seconds = _top_classes(classifier, prepared.inputs, batch_size, len(names))
    frame = pd.DataFrame({"id": table.ids[good], "row": table.numbers[good], "predicted_label": labels[top_i[:, 0]],
                          "class_name": names[top_i[:, 0]], "confidence": top_p[:, 0]})
    for k in range(top_i.shape[1]):
        frame[f"top{k + 1}_class"] = names[top_i[:, k]]
        frame[f"top{k + 1}_probability"] = top_p[:, k]
    scored = _Scored(model_seconds=seconds)
    truth, true_names = _truth(table.rows, config)
    if truth is not None:
        frame["true_label"] = truth = truth[good]
        if true_names is not None:  # text labels are class names: the name as given, beside its label
            frame["true_class"] = _text(true_names[good])
        known = np.isin(truth, labels)
        scored.labelled = int(known.sum())
        scored.correct = int((truth[known] == frame["predicted_label"].to_numpy()[known]).sum())
    frame["model_name"], frame["model_version"], frame["model_run_id"] = model.name, model.version, model.run_id
    frame["input_file"] = _text(table.files[good])
    frame["input_sha256"] = _text(table.sha256[good])
    if prepared.notes is not None:
        frame["notes"] = _text(prepared.notes)
    frame["scored_at"] = scored_at
    positions = prepared.problems["position"].to_numpy(dtype=np.int64)
    errors = pd.DataFrame({"input_file": table.files[positions], "row": table.numbers[positions],
                           "id": table.ids[positions], "column": prepared.problems["column"].to_numpy(),
                           "value": prepared.problems["value"].to_numpy(), "reason": prepared.problems["reason"].to_numpy()},
                          columns=ERROR_COLUMNS)
    if len(table.refused):  # entries refused before reading: among the others
        errors = pd.concat([table.refused, errors], ignore_index=True)
    # By row (a row's problems in the modality's order), so a file read in batches of any size
    # gives the same errors file.
    scored.predictions, scored.errors = [frame], [errors.sort_values("row", kind="stable", ignore_index=True)]
    return scored


def _top_classes(classifier: Classifier, inputs, batch_size: int, classes: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(top-k probabilities, their class indices, model seconds) of uint8 images or int64 token
    ids; for no rows, no rows typed as the model's are."""
    k = min(TOP_K, classes)
    if not len(inputs):
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64), 0.0
    tick = time.perf_counter()
    top_p, top_i = classifier.probabilities(inputs, batch_size).topk(k, dim=1)
    seconds = time.perf_counter() - tick
    return top_p.cpu().numpy(), top_i.cpu().numpy(), seconds


def _truth(rows: pa.Table | pd.DataFrame, config: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(the true labels of a table that holds the model's label column, else None; for a text
    model, the label values as given, else None). Pixel labels are numbers (NaN where not one);
    text labels are class names, mapped to their label (NaN for a name the model does not know)."""
    label_column, text = config.get("label_column", "label"), config.get("input") == "text"
    names = rows.column_names if isinstance(rows, pa.Table) else list(rows.columns)
    if label_column not in names:
        return None, None
    if not len(rows):  # a header-only file: typed as integer labels are
        return np.zeros(0, dtype=np.int64), (np.zeros(0, dtype=object) if text else None)
    values = rows.column(label_column).to_pylist() if isinstance(rows, pa.Table) else rows[label_column].tolist()
    if not text:
        return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(), None
    given = np.array(["" if v is None or (np.ndim(v) == 0 and pd.isna(v)) else str(v).strip() for v in values],
                     dtype=object)
    labels = dict(zip(config["class_names"], config["labels"]))
    truth = pd.Series([labels.get(name, np.nan) for name in given])
    return (truth.astype(np.int64) if truth.notna().all() else truth).to_numpy(), given


def _text(values) -> pd.Series:
    """A text column typed the same whether it holds rows or none (an empty list is float64)."""
    return pd.Series(values, dtype="str")


def _finish(identity: dict, scored: _Scored, started: float, outputs: Outputs, results: ResultFiles) -> ScoreSummary:
    """Puts the predictions, errors and manifest in place; the job's summary."""
    summary = ScoreSummary(
        model=identity["model"], output=outputs.output, errors=outputs.errors, manifest=outputs.manifest,
        files=identity["inputs"], rows_scored=scored.rows, rows_rejected=scored.rejected,
        accuracy=(scored.correct / scored.labelled) if scored.labelled else None, labelled_rows=scored.labelled,
        reused=False, seconds=time.perf_counter() - started, model_seconds=scored.model_seconds)
    results.commit(json.dumps({**identity, "summary": summary.to_dict()}, indent=2, default=str))
    return summary
