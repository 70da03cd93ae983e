"""Registration and the gate: log the trained model, register it as the challenger, then let the
champion/challenger gate decide whether it becomes champion."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from keel.core.contracts import RegisteredVersion, RunRef, TrainingSummary, VersionRef, Verdict
from keel.data.versions import DatasetVersion, class_indices
from keel.modalities import modality_for
from keel.stages.evaluation import score_registered_on_split
from keel.stages.ingest import split_tags, stored
from keel.stages.runs import close_run
from keel.stages.training import load_trained
from keel.tracking import client as tracking
from keel.tracking.promotion import (CHALLENGER, CHAMPION, AliasConflict, PromotionPolicy, current_version, decide,
                                     move_alias)
from keel.serving.pyfunc import CLASSIFIER, log_pyfunc
from keel.tracking.registry import VERDICT_TAG, describe_version, register


def register_stage(run: RunRef, version: VersionRef, trained: TrainingSummary, metrics: dict,
                   model_name: str | None = None) -> RegisteredVersion:
    """Logs the pyfunc model, registers a version with tags, makes it the challenger, closes the run.

    A retry after the version was registered registers nothing twice: it finishes what the
    first attempt left undone (the challenger alias, closing the run)."""
    dataset = stored(version)
    name = model_name or f"keel-{dataset.name}"
    client = tracking.client()
    registered = registered_from_run(client, name, run.run_id) or _log_and_register(
        client, name, run, dataset, trained, metrics)
    point_alias(client, registered, CHALLENGER, f"new version from run {registered.run_id}")
    close_run(client, run)
    return registered


def _log_and_register(client, name: str, run: RunRef, dataset: DatasetVersion, trained: TrainingSummary,
                      metrics: dict) -> RegisteredVersion:
    model, spec = load_trained(trained.model_path)
    # A text model's tokenizer was saved beside its weights; the logged model carries it.
    extra = {"tokenizer": Path(trained.model_path).parent / spec.tokenizer} if spec.tokenizer else None
    model_uri = log_pyfunc(run.run_id, CLASSIFIER, model, spec.model_dump(), input_example(dataset), extra)
    evaluation = metrics.get("evaluation", {})
    tags = {
        "dataset": dataset.name,
        "dataset_version": dataset.id,
        "evaluation_ids_sha256": dataset.meta.get("evaluation_ids_sha256") or "",
        "evaluation_accuracy": f"{evaluation.get('accuracy', float('nan')):.6f}",
        "evaluation_macro_f1": f"{evaluation.get('macro_f1', float('nan')):.6f}",
        "architecture": spec.architecture,
        "git_commit": tracking.git_commit(),
        **{k.removeprefix("keel."): v for k, v in split_tags(dataset).items()},
    }
    number = register(client, model_uri, name, run.run_id, tags,
                      description=f"{spec.architecture} on {dataset.name} {dataset.id}",
                      model_description="Keel text classifier" if spec.input == "text" else "Keel pixel classifier")
    return RegisteredVersion(name=name, version=number, model_uri=f"models:/{name}/{number}", run_id=run.run_id, tags=tags)


def registered_from_run(client, name: str, run_id: str) -> RegisteredVersion | None:
    """The version of `name` that run `run_id` registered already (a retried registration
    registers nothing twice), or None."""
    done = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if not done:
        return None
    mv = done[0]
    return RegisteredVersion(name=name, version=str(mv.version), model_uri=f"models:/{name}/{mv.version}",
                             run_id=run_id, tags={k: v for k, v in mv.tags.items() if not k.startswith("keel.")})


def point_alias(client, registered: RegisteredVersion, alias: str, reason: str, attempts: int = 3) -> None:
    """Points `alias` at the registered version (compare-and-set, recorded in the alias history
    with `reason`), unless it is there already or a newer version (registered since) holds it."""
    for _ in range(attempts):
        current = current_version(client, registered.name, alias)
        if current is not None and int(current) >= int(registered.version):
            return
        try:
            move_alias(client, registered.name, alias, registered.version, current, "registered", reason)
            return
        except AliasConflict:
            continue  # another registration moved it meanwhile: look again
    raise AliasConflict(f"{registered.name}@{alias} kept moving; gave up after {attempts} attempts")


def input_example(dataset: DatasetVersion) -> pd.DataFrame:
    """Two evaluation rows as the served model takes them (the logged model's input example):
    pixel columns, photo paths or texts, as the version's modality gives them."""
    rows = np.sort(dataset.indices("evaluation")[:2])
    return modality_for(dataset).examples(dataset, rows)


@dataclass
class _EvaluationRows:
    """The evaluation rows' true classes and whether the challenger gets each right: computed
    once, and only when there is a champion to compare with."""

    version: VersionRef
    challenger_uri: str
    predictions_path: str | None

    @cached_property
    def targets(self) -> np.ndarray:  # in the sorted order both models were scored in
        dataset = stored(self.version)
        return class_indices(dataset.labels()[np.sort(dataset.indices("evaluation"))], dataset.meta["labels"])

    @cached_property
    def challenger_correct(self) -> np.ndarray:
        path = self.predictions_path
        predictions = np.load(path) if path and Path(path).exists() else None
        if predictions is None or len(predictions) != len(self.targets):  # e.g. a retry on another machine
            predictions = score_registered_on_split(self.challenger_uri, self.version)["predictions"]
        return np.asarray(predictions) == self.targets


def promote_stage(version: VersionRef, registered: RegisteredVersion, metrics: dict, policy: PromotionPolicy,
                  attempts: int = 3) -> Verdict:
    """The gate: scores the current champion on this run's evaluation split, compares the two row
    by row (McNemar's test and a paired bootstrap interval, keel.tracking.promotion.decide), and moves
    `champion` to the registered version (compare-and-set) when the challenger wins. Returns the verdict."""
    client = tracking.client()
    name, number = registered.name, str(registered.version)
    challenger = metrics["evaluation"]
    rows = _EvaluationRows(version, f"models:/{name}/{number}", challenger.get("predictions_path"))
    for _ in range(attempts):
        champion_version = current_version(client, name, CHAMPION)
        verdict = _judge(version, name, number, challenger, champion_version, rows, policy)
        if not verdict.promote:
            break
        try:
            move_alias(client, name, CHAMPION, number, champion_version, "gate", verdict.text())
            break
        except AliasConflict:
            continue  # another promotion won the race: decide again against the new champion
    else:
        verdict.promote = False
        verdict.reasons.append(f"the champion kept moving; gave up after {attempts} attempts")
    verdict.name = name
    verdict.evaluation_ids_sha256 = stored(version).meta.get("evaluation_ids_sha256")
    _tag_verdict(client, name, number, verdict, policy)
    return verdict


def _judge(version: VersionRef, name: str, number: str, challenger: dict, champion_version: str | None,
           rows: _EvaluationRows, policy: PromotionPolicy) -> Verdict:
    """The gate's decision against the current champion (the floor alone without one)."""
    split = stored(version).split_description or None
    if champion_version is None or champion_version == number:
        return decide(challenger, None, policy, number, champion_version, split=split)
    try:
        champion = score_registered_on_split(f"models:/{name}/{champion_version}", version)
    except ValueError as exc:
        verdict = decide(challenger, None, policy, number, None, split=split)
        verdict.promote = False
        verdict.reasons.append(f"champion v{champion_version} cannot be compared: {exc}")
        return verdict
    champion_correct = np.asarray(champion.pop("predictions")) == rows.targets
    return decide(challenger, champion, policy, number, champion_version, rows.challenger_correct, champion_correct,
                  split=split)


def _tag_verdict(client, name: str, number: str, verdict: Verdict, policy: PromotionPolicy) -> None:
    """The verdict in words and, after a paired comparison, its figures, as tags of the version, and
    in words in its description. Only the gate writes the verdict: an override or a rollback
    leaves it as it is (keel.tracking.registry.override_champion)."""
    client.set_model_version_tag(name, number, VERDICT_TAG, verdict.text())
    client.set_model_version_tag(name, number, "keel.promoted", str(verdict.promote).lower())
    if verdict.p_value is not None:  # compared with a champion on the same rows
        client.set_model_version_tag(name, number, "keel.gate.p_value", f"{verdict.p_value:.6g}")
        client.set_model_version_tag(name, number, "keel.gate.difference", f"{verdict.difference:+.6f}")
        client.set_model_version_tag(name, number, "keel.gate.ci",
                                     f"{verdict.ci_low:+.6f}..{verdict.ci_high:+.6f} ({policy.confidence * 100:g} %)")
    describe_version(client, name, number)
