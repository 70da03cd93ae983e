"""`keel train`: the training flow on a dataset, with options from TrainConfig and PromotionPolicy."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from pydantic import ValidationError

from cli.options import dataset_config, given, invalid_option
from flows.prefect_api import run_flow
from keel.core.config import AugmentConfig, TrainConfig, load_dataset_config
from keel.core.contracts import TrainingOutcome
from keel.tracking.promotion import PromotionPolicy
from keel.training.distributed import refuse_unsupported


def train(args: argparse.Namespace) -> int:
    config = dataset_config(args)
    try:
        settings = _train_config(args, config)
        promotion = PromotionPolicy(**given(args, args.promotion_fields))
    except ValidationError as exc:
        print(f"keel train: {invalid_option(exc, args, _yaml_field(config))}", file=sys.stderr)
        return 2
    refuse_unsupported(args.nproc, settings, load_dataset_config(config).format)  # before anything runs
    started = time.perf_counter()
    result = run_flow(_training_flow, dataset_config=config, train=settings, fresh=args.fresh,
                      model_name=args.model_name, promotion=promotion, nproc=args.nproc)
    print(summary(result, time.perf_counter() - started))
    return 0


def _training_flow():
    # The API boots on the other core while this process imports Prefect, torch, MLflow and
    # GX (flows/prefect_api.py): the flow is imported once it is started, not at the top.
    from flows.training import training_flow

    import great_expectations  # noqa: F401  (validation needs it: import while the API boots)

    return training_flow


def _train_config(args: argparse.Namespace, config: str) -> TrainConfig:
    """The dataset YAML's `training:` block, overridden by the options given."""
    defaults = load_dataset_config(config).training
    augment = {**defaults.get("augment", {})}
    if args.no_augment:
        augment["enabled"] = False
    if args.horizontal_flip:
        augment["horizontal_flip"] = True
    return TrainConfig(**{**defaults, **given(args, args.train_fields), "augment": AugmentConfig(**augment)})


def _yaml_field(config: str) -> Callable[[str], str]:
    """How a field of the YAML's training block is named: training[.augment].FIELD in FILE."""
    augment_only = set(AugmentConfig.model_fields) - set(TrainConfig.model_fields)
    return lambda field: f"training{'.augment' if field in augment_only else ''}.{field} in {config}"


def summary(result: TrainingOutcome, seconds: float) -> str:
    """What a person wants to read after `keel train`."""
    version, trained, registered = result.version, result.trained, result.registered
    evaluation = result.metrics.get("evaluation", {})
    lines = [
        "",
        f"dataset   {version.dataset} version {version.version} ({version.rows} rows, "
        f"{'reused' if version.reused else 'ingested'}); validation passed in {result.validation['seconds']:.2f} s",
        f"training  {trained.epochs_run}"
        + (f" of {trained.planned_epochs} planned" if trained.planned_epochs else "")
        + f" epochs (best {trained.best_epoch}"
        + (", resumed after epoch %d" % trained.resumed_from_epoch if trained.resumed_from_epoch else "")
        + (f", stopped early: {trained.stop_reason or 'patience'}" if trained.stopped_early else "")
        + f") in {trained.loop_seconds:.1f} s on {trained.device} ({trained.precision})",
        f"evaluation accuracy {evaluation.get('accuracy', float('nan')):.4f}, macro-F1 {evaluation.get('macro_f1', float('nan')):.4f} "
        f"on {evaluation.get('rows', 0)} held-out rows",
        f"split     {version.split or 'random split'}",
    ]
    leakage = version.leakage
    if leakage:
        lines.append(f"baseline  a 1-nearest-neighbour lookup in the training rows scores {leakage['nn_accuracy']:.4f} "
                     f"on the same rows; {leakage['near_copy_share']:.1%} of them have a near-copy in training")
    if result.validation.get("warnings"):
        lines += [f"warning   {w}" for w in result.validation["warnings"]]
    if "test" in result.metrics:
        test = result.metrics["test"]
        lines.append(f"test      accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f} on {test['rows']} rows")
    lines += [
        f"model     {registered.model_uri} (challenger), run {registered.run_id}",
        f"verdict   {result.verdict.text()}",
        f"total     {seconds:.1f} s ({seconds - trained.loop_seconds:.1f} s outside the training loop)",
    ]
    return "\n".join(lines)
