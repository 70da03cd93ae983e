"""Batch scoring: input files in, prediction files out, rows that cannot be scored to an errors file.

One job checks its outputs before any work (keel.serving.outputs), reads each input once
(keel.serving.inputs: files of pixel rows or texts, or photos), loads the model once, and scores every
table of rows through one path: the model's modality preprocesses the rows (a bad row is
refused with its reason, never a failed job), the good rows are scored in large batches, and
the predictions, errors and a manifest are written atomically. A manifest that matches the
inputs' sha256 and the model version makes a re-run return the existing output.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import chain, islice
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from keel.serving.inputs import Inputs, ScoringTable, read_inputs, scoring_tables
from keel.serving.outputs import ERROR_COLUMNS, Outputs, check_output, write_outputs
from keel.serving.pyfunc import Classifier, load_verified_model
from keel.tracking.registry import ModelRef, resolve_model

PHOTO_BATCH = 256  # photos are large: at most this many in one forward pass
TEXT_BATCH = 256  # texts: attention grows with the square of the length, so not the pixel rows' 1024
TOP_K = 3


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


@dataclass
class _Scored:
    """What scoring a job's tables gave, gathered table by table."""

    predictions: list[pd.DataFrame] = field(default_factory=list)
    errors: list[pd.DataFrame] = field(default_factory=list)
    correct: int = 0
    labelled: int = 0
    model_seconds: float = 0.0

    def add(self, other: _Scored) -> None:
        self.predictions += other.predictions
        self.errors += other.errors
        self.correct += other.correct
        self.labelled += other.labelled
        self.model_seconds += other.model_seconds


def score_files(client, reference: str, input_path: str | Path, output: str | Path, fmt: str = "parquet",
                force: bool = False, id_column: str = "id", batch_size: int = 1024) -> ScoreSummary:
    """Scores every row of the input file(s) with one registered model version."""
    started = time.perf_counter()
    outputs = check_output(input_path, output, fmt)  # before any work
    model = resolve_model(client, reference)
    inputs = read_inputs(input_path, model.inputs)
    identity = {"model": {"name": model.name, "version": model.version, "run_id": model.run_id},
                "inputs": inputs.identity(), "format": fmt}
    if inputs.refused:  # entries the photo listing refused (links out of the folder...): part of what was asked
        identity["refused"] = [{"file": path, "reason": reason} for path, reason in inputs.refused.items()]
    previous = outputs.previous
    if not force and previous is not None and {k: previous.get(k) for k in identity} == identity:
        return ScoreSummary(**{**previous["summary"], "reused": True, "seconds": time.perf_counter() - started})
    batch = min(batch_size, {"photos": PHOTO_BATCH, "texts": TEXT_BATCH}.get(model.inputs, batch_size))
    scored = _score(model, inputs, input_path, id_column, batch)
    return _finish(identity, scored, started, outputs, fmt)


def _score(model: ModelRef, inputs: Inputs, input_path: str | Path, id_column: str, batch_size: int) -> _Scored:
    """Loads the model once and scores every table of the inputs with it."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Once per job; it loads while Arrow (which releases the GIL) parses the first file.
        # Text files are read by the model's text column, so they wait for the model.
        loading = pool.submit(load_verified_model, model.uri)
        tables = scoring_tables(inputs, input_path, model.inputs, id_column, lambda: loading.result().config)
        first = list(islice(tables, 1))
        classifier = loading.result()
    scored = _Scored()
    scored_at = dt.datetime.now(dt.timezone.utc).isoformat()
    for table in chain(first, tables):
        scored.add(score_table(table, classifier, model, batch_size, scored_at))
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
    if len(table.refused):  # entries refused before reading: among the others, by row
        errors = pd.concat([table.refused, errors], ignore_index=True).sort_values("row", kind="stable")
    scored.predictions, scored.errors = [frame], [errors]
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


def _finish(identity: dict, scored: _Scored, started: float, outputs: Outputs, fmt: str) -> ScoreSummary:
    """Writes the predictions, errors and manifest; the job's summary."""
    # Tables with no good row still give their (empty) frame: a job that scores nothing writes
    # the same columns and types as one that scores rows, not a table without columns.
    frames = [frame for frame in scored.predictions if len(frame)] or scored.predictions
    predictions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    errors = pd.concat(scored.errors, ignore_index=True) if scored.errors else pd.DataFrame(columns=ERROR_COLUMNS)
    # Typed the same with problems or none (an empty frame's columns would be written as nulls).
    errors = errors.astype({"input_file": "str", "row": "int64", "id": "str", "column": "str", "value": "str",
                            "reason": "str"})
    if "id" in predictions:
        predictions["id"] = predictions["id"].astype(str)
    summary = ScoreSummary(
        model=identity["model"], output=outputs.output, errors=outputs.errors, manifest=outputs.manifest,
        files=identity["inputs"], rows_scored=len(predictions),
        rows_rejected=int(errors.drop_duplicates(["input_file", "row"]).shape[0]),
        accuracy=(scored.correct / scored.labelled) if scored.labelled else None, labelled_rows=scored.labelled,
        reused=False, seconds=time.perf_counter() - started, model_seconds=scored.model_seconds)
    write_outputs(outputs, fmt, predictions, errors, json.dumps({**identity, "summary": summary.to_dict()}, indent=2,
                                                                 default=str))
    return summary
