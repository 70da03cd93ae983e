"""Registering a pre-trained masked language model: logged as the fill-mask pyfunc with its
tokenizer (keel.serving.masked_lm), registered through Keel's trusted registration (every
file's sha256 recorded with the version: keel.tracking.registry), and given an alias
(`pretrained` by default) that `keel train --backbone models:/NAME@ALIAS` names. There is no
gate: a masked language model is not compared with classifiers.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from keel.core.contracts import RegisteredVersion, RunRef, TrainingSummary, VersionRef
from keel.data.versions import DatasetVersion
from keel.models.masked_lm import TASK
from keel.serving.masked_lm import FILL_MASK, MASK
from keel.serving.pyfunc import log_pyfunc
from keel.stages.ingest import split_tags, stored
from keel.stages.pretraining import load_pretrained
from keel.stages.runs import close_run
from keel.tracking import client as tracking
from keel.stages.registration import point_alias, registered_from_run
from keel.tracking.registry import register

PRETRAINED = "pretrained"  # the alias a new pre-trained version gets unless told otherwise


def mlm_model_name(dataset: str) -> str:
    """The registered name of a dataset's masked language model."""
    return f"{dataset}-mlm"


def register_pretrained_stage(run: RunRef, version: VersionRef, trained: TrainingSummary, metrics: dict,
                              model_name: str | None = None, alias: str = PRETRAINED) -> RegisteredVersion:
    """Logs the fill-mask model, registers a version with its tags, points `alias` at it and
    closes the run. A retry after the version was registered registers nothing twice."""
    dataset = stored(version)
    name = model_name or mlm_model_name(dataset.name)
    client = tracking.client()
    registered = registered_from_run(client, name, run.run_id) or _log_and_register(
        client, name, run, dataset, trained, metrics)
    point_alias(client, registered, alias, f"pre-trained in run {registered.run_id}")
    close_run(client, run)
    return registered


def _log_and_register(client, name: str, run: RunRef, dataset: DatasetVersion, trained: TrainingSummary,
                      metrics: dict) -> RegisteredVersion:
    model, config = load_pretrained(trained.model_path)
    tokenizer = config.pop("tokenizer_file")  # a run-time path: the logged model carries the file itself
    examples = masked_examples(dataset, config.get("text_column") or "text")
    model_uri = log_pyfunc(run.run_id, FILL_MASK, model, config, examples, {"tokenizer": Path(tokenizer)})
    evaluation = metrics.get("evaluation", {})
    tags = {
        "dataset": dataset.name,
        "dataset_version": dataset.id,
        "architecture": config["architecture"],
        "task": TASK,
        "evaluation_masked_accuracy": f"{evaluation.get('masked_accuracy', float('nan')):.6f}",
        "evaluation_masked_top_k_accuracy": f"{evaluation.get('masked_top_k_accuracy', float('nan')):.6f}",
        "git_commit": tracking.git_commit(),
        **{k.removeprefix("keel."): v for k, v in split_tags(dataset).items()},
    }
    number = register(client, model_uri, name, run.run_id, tags,
                      description=f"{config['architecture']} masked language model pre-trained on {dataset.name} "
                      f"{dataset.id}", model_description="Keel masked language model (fill-mask)")
    return RegisteredVersion(name=name, version=number, model_uri=f"models:/{name}/{number}", run_id=run.run_id, tags=tags)


def masked_examples(dataset: DatasetVersion, column: str, count: int = 2) -> pd.DataFrame:
    """`count` training texts with their longest word replaced by [MASK]: the logged model's input example."""
    texts = dataset.texts()
    examples = []
    for row in np.sort(dataset.indices("train")):
        text = texts[int(row)]
        words = list(re.finditer(r"\b[A-Za-z]{3,}\b", text))
        if words:
            word = max(words, key=lambda m: m.end() - m.start())
            examples.append(text[:word.start()] + MASK + text[word.end():])
        if len(examples) == count:
            break
    return pd.DataFrame({column: examples or [MASK]})
