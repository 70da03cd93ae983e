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
    if args.workers is not None or args.dask_address:
        return _predict_parts(args)
    from keel.serving.outputs import format_of  # pandas, pyarrow (MLflow imports them anyway)

    # The format --output's name implies unless --format says, else parquet.
    fmt = args.format or format_of(args.output) or "parquet"
    reused = None if args.force else _reused(args, fmt)
    if reused is not None:
        print(reused.text())
        return 1 if reused.rows_rejected else 0
    with loaded_flow(_batch_predict_flow) as scoring:
        result = scoring(model=args.model, input_path=args.input, output=args.output, force=args.force,
                         format=fmt, id_column=args.id_column)
    print(result["text"])
    return 1 if result["rows_rejected"] else 0


def _reused(args: argparse.Namespace, fmt: str):
    """The earlier job's summary when its manifest says it scored exactly these inputs with the
    version `--model` names now, else None. Work that never reaches a flow needs no Prefect API,
    no torch and no model: this answers the daily re-run in about 2 s instead of 6-10 (the
    figures: docs/benchmarks.md). A job that has work, a remote input or output (and any
    mistake: the flow says it) goes through the flow as before."""
    from keel.core.io import is_remote
    from keel.serving.jobs import reused_summary
    from keel.tracking import client as tracking

    if is_remote(args.input) or is_remote(args.output):
        return None
    try:
        return reused_summary(tracking.registry_client, args.model, args.input, args.output, fmt)
    except Exception:  # a mistake or an outage: the flow run reports it (and retries an outage), as Prefect shows
        return None


def _batch_predict_flow():
    from flows.batch_predict import batch_predict_flow

    return batch_predict_flow


def _predict_parts(args: argparse.Namespace) -> int:
    """`keel predict --workers N | --dask-address ADDRESS`: one part per input file, scored on
    Dask; --output is a folder (keel.serving.parts)."""
    refuse_credentials(args.dask_address, "--dask-address")
    if args.workers is not None and args.workers < 1:
        raise KeelError(f"--workers {args.workers}: pass at least 1 worker process")
    if args.dask_address:
        _reach_scheduler(args.dask_address)
    with loaded_flow(_batch_predict_parts_flow) as scoring:
        scoring = scoring.with_options(task_runner=dask_task_runner(args.workers, args.dask_address))
        result = scoring(model=args.model, input_path=args.input, output=args.output, force=args.force,
                         format=args.format or "parquet", id_column=args.id_column)
    print(result["text"])
    return 1 if result["rows_rejected"] else 0


def _reach_scheduler(address: str) -> None:
    """Raises KeelError at once when nothing listens at a tcp:// scheduler address (a wrong
    host or port, a cluster nobody started), instead of Dask's traceback 30 s into the flow run."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme != "tcp":
        return  # tls://, ucx://...: Dask's own connection says what is wrong
    try:
        host, port = parts.hostname, parts.port or 8786
    except ValueError:
        raise KeelError(f"--dask-address {address}: not a scheduler address; pass tcp://HOST:PORT") from None
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as exc:
        raise KeelError(f"--dask-address {address}: no Dask scheduler answers there ({exc.strerror or exc}); is the "
                        "cluster up, and are the host and port right?") from None


def _batch_predict_parts_flow():
    from flows.batch_predict import batch_predict_parts_flow

    return batch_predict_parts_flow


def dask_task_runner(workers: int | None, address: str | None):
    """Prefect's Dask task runner: on the cluster at `address`, else on a local cluster of
    `workers` processes (one thread each, so a worker scores one file at a time and its torch
    runs one thread: Dask's workers set OMP_NUM_THREADS=1), started and stopped with the flow
    run. Its scheduler and workers listen on the loopback interface only (its dashboard, when
    bokeh is installed, on a free port there), and Dask logs only its errors: Prefect's console
    handler would print its every connection, and the nanny's kill of a worker still tearing
    torch down at exit. The worker processes inherit this process's environment (KEEL_HOME,
    MLFLOW_TRACKING_URI, KEEL_SIGNING_KEY...), and Prefect's settings (its API) travel with each task."""
    import logging

    from prefect_dask import DaskTaskRunner  # Dask: only for the parts of `keel predict --workers/--dask-address`

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0",
                                          "silence_logs": logging.ERROR})


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
