"""`keel pretrain`: the pre-training flow on a text dataset, with options from PretrainConfig."""

from __future__ import annotations

import argparse
import sys
import time

from pydantic import ValidationError

from cli.options import dataset_config, given, invalid_option
from flows.prefect_api import run_flow
from keel.core.config import load_dataset_config
from keel.core.pretrain_config import PretrainConfig


def pretrain(args: argparse.Namespace) -> int:
    config = dataset_config(args)
    try:
        settings = _pretrain_config(args, config)
    except ValidationError as exc:
        print(f"keel pretrain: {invalid_option(exc, args, lambda field: f'training.{field} in {config}')}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    result = run_flow(_pretraining_flow, dataset_config=config, pretrain=settings, fresh=args.fresh,
                      model_name=args.model_name, alias=args.alias)
    print(summary(result, time.perf_counter() - started))
    return 0


def _pretraining_flow():
    # Imported once the temporary API is booting (flows/prefect_api.py), as for `keel train`.
    from flows.pretraining import pretraining_flow

    import great_expectations  # noqa: F401  (validation needs it: import while the API boots)

    return pretraining_flow


def _pretrain_config(args: argparse.Namespace, config: str) -> PretrainConfig:
    """The options given; the truncation length defaults to the dataset YAML's training
    max_length when it sets one, so the encoder takes the texts its classifiers will read."""
    defaults = {k: v for k, v in load_dataset_config(config).training.items() if k == "max_length"}
    return PretrainConfig(**{**defaults, **given(args, args.pretrain_fields)})


def summary(result, seconds: float) -> str:
    """What a person wants to read after `keel pretrain`."""
    version, trained, registered = result.version, result.trained, result.registered
    evaluation = result.metrics["evaluation"]
    reference = f"models:/{registered.name}@{result.alias}"
    return "\n".join([
        "",
        f"dataset   {version.dataset} version {version.version} ({version.rows} rows, "
        f"{'reused' if version.reused else 'ingested'}); validation passed in {result.validation['seconds']:.2f} s",
        f"training  {trained.epochs_run}" + (f" of {trained.planned_epochs} planned" if trained.planned_epochs else "")
        + f" epochs (best {trained.best_epoch}"
        + (", resumed after epoch %d" % trained.resumed_from_epoch if trained.resumed_from_epoch else "")
        + (f", stopped early: {trained.stop_reason or 'patience'}" if trained.stopped_early else "")
        + f") in {trained.loop_seconds:.1f} s on {trained.device} ({trained.precision})",
        f"evaluation masked-token accuracy {evaluation['masked_accuracy']:.4f}, top-{evaluation['top_k']} "
        f"{evaluation['masked_top_k_accuracy']:.4f}, perplexity {evaluation['perplexity']:.1f} on "
        f"{evaluation['masked_tokens']} tokens of {evaluation['rows']} held-out texts",
        f"model     {registered.model_uri} ({result.alias}), run {registered.run_id}",
        f"next      keel train --dataset {version.dataset} --model bert-tiny --backbone {reference}",
        f"total     {seconds:.1f} s ({seconds - trained.loop_seconds:.1f} s outside the training loop)",
    ])
