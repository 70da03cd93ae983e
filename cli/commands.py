"""`keel predict`, `keel validate`, `keel validate profile` and `keel watch`: the flows that
score and check data, each run against a temporary Prefect API (flows.prefect_api.run_flow,
loaded_flow).

The flows that run on Prefect are imported inside the small loader functions below, not at
the top: run_flow starts the API first, and the server boots while the import (Prefect,
torch, MLflow, GX) runs; `keel --help` imports none of them.
"""

from __future__ import annotations

import argparse
import os

from cli.options import dataset_config
from flows.prefect_api import loaded_flow, run_flow
from flows.watch import watch as watch_landing
from keel.core.errors import KeelError
from keel.core.io import refuse_credentials


def predict(args: argparse.Namespace) -> int:
    # Checked before a flow run exists: Prefect stores a run's parameters in its database.
    refuse_credentials(args.input, "--input")
    refuse_credentials(args.output, "--output")
    with loaded_flow(_batch_predict_flow) as scoring:
        from keel.serving.outputs import format_of  # pandas, pyarrow: the flow's module imported them

        # The format --output's name implies unless --format says, else parquet.
        result = scoring(model=args.model, input_path=args.input, output=args.output, force=args.force,
                         format=args.format or format_of(args.output) or "parquet", id_column=args.id_column)
    print(result["text"])
    return 1 if result["rows_rejected"] else 0


def _batch_predict_flow():
    from flows.batch_predict import batch_predict_flow

    return batch_predict_flow


def validate(args: argparse.Namespace) -> int:
    config = dataset_config(args)
    refuse_credentials(args.input, "--input")
    refuse_credentials(args.labels, "--labels")
    result = run_flow(_validate_incoming_flow, dataset_config=config, input_path=args.input, report_dir=args.report,
                      labels_path=args.labels, id_column=args.id_column, curate=args.curate)
    print(result["text"])
    if "curated" in result:
        curated = result["curated"]
        print(f"curated  {curated['dataset']} version {curated['version']} ({curated['rows']} rows, "
              f"{curated['batches']} accepted batches{'' if curated['added'] else '; this batch was already there'})")
    return result["exit_code"]


def _validate_incoming_flow():
    from flows.validate_incoming import validate_incoming_flow

    return validate_incoming_flow


def profile(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise KeelError("--epochs must be at least 1")
    result = run_flow(_profile_flow, dataset_config=dataset_config(args), out=args.out, epochs=args.epochs)
    print(f"suite       {result['suite_path']} ({result['expectations']} expectations)")
    if "lines" in result:  # a text suite: its drift reference, no autoencoder
        print("\n".join(result["lines"]))
        return 0
    print(f"autoencoder {result['model_uri']} ({result['weights_path']}), threshold {result['threshold']:.4g}")
    print("flagged     " + ", ".join(f"{k.removeprefix('flagged_')} {v:.1%}" for k, v in result["behaviour"].items()))
    return 0


def _profile_flow():
    from flows.reference_profile import profile_flow

    return profile_flow


def watch(args: argparse.Namespace) -> int:
    if not os.environ.get("PREFECT_API_URL"):
        raise KeelError("keel watch emits events to a Prefect server: set PREFECT_API_URL (see `keel stack up`)")
    watch_landing(args.landing, dataset_config(args), args.interval, args.once, log=lambda line: print(line, flush=True))
    return 0
