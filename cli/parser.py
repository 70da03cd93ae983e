"""The `keel` command line: its commands and their options (argparse; usage errors exit 2)."""

from __future__ import annotations

import argparse

from cli.options import add_dataset_options, add_model_options
from keel.core.config import TrainConfig
from keel.core.pretrain_config import PretrainConfig
from keel.tracking.promotion import PromotionPolicy

DEFAULTS = argparse.ArgumentDefaultsHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keel", description="Keel: train, evaluate and register models with Prefect and MLflow.")
    commands = parser.add_subparsers(dest="command", required=True)
    _train(commands)
    _pretrain(commands)
    _predict(commands)
    _validate(commands)
    _registry(commands)
    _stack(commands)
    _watch(commands)
    _ui(commands)
    return parser


def _train(commands) -> None:
    train = commands.add_parser("train", help="run the training flow (ingest, validate, train, evaluate, register)")
    add_dataset_options(train, required=False)
    training = train.add_argument_group(
        "training", "a training option not given takes the value in the dataset YAML's `training:` block, else the default shown")
    train.set_defaults(train_fields=add_model_options(training, TrainConfig))
    training.add_argument("--no-augment", action="store_true", help="train without augmentation")
    training.add_argument("--horizontal-flip", action="store_true",
                          help="add random horizontal flips (off: handedness matters in signs)")
    train.add_argument("--fresh", action="store_true", help="ignore the checkpoint of an interrupted identical run and start over")
    train.add_argument("--model-name", default=None, help="registered model name (default keel-<dataset>)")
    train.add_argument("--nproc", type=int, default=1, metavar="N",
                       help="data-parallel training in N processes (pixel tables): gloo on the CPU, one GPU each with "
                       "NCCL; a checkpoint resumes with any N (default: 1)")
    promotion = train.add_argument_group("promotion", "when the new version becomes champion (the champion/challenger gate)")
    train.set_defaults(promotion_fields=add_model_options(promotion, PromotionPolicy))


def _pretrain(commands) -> None:
    pretrain = commands.add_parser(
        "pretrain", help="pre-train bert-tiny as a masked language model on a text dataset's training rows and register "
        "it (<dataset>-mlm@pretrained) for `keel train --model bert-tiny --backbone models:/NAME@ALIAS`")
    add_dataset_options(pretrain, required=True)
    training = pretrain.add_argument_group(
        "pre-training", "max-length defaults to the dataset YAML's training max_length when it sets one")
    pretrain.set_defaults(pretrain_fields=add_model_options(training, PretrainConfig))
    pretrain.add_argument("--fresh", action="store_true", help="ignore the checkpoint of an interrupted identical run and start over")
    pretrain.add_argument("--model-name", default=None, help="registered model name (default <dataset>-mlm)")
    pretrain.add_argument("--alias", default="pretrained", help="the alias the new version gets (default: pretrained)")


def _predict(commands) -> None:
    predict = commands.add_parser("predict", help="score pixel-row files, text files with a text model, or photos "
                                  "with an image model, with a registered model", formatter_class=DEFAULTS)
    predict.add_argument("--model", required=True, help="NAME (= NAME@champion), NAME@alias or NAME/version")
    predict.add_argument("--input", required=True, help="a CSV (gz or not) or parquet file, or a folder of them; "
                         "for a text model also JSONL; for an image model a photo or a folder of photos (rows keyed "
                         "by relative path)")
    predict.add_argument("--output", required=True, help="the predictions file to write; with --workers or "
                         "--dask-address, a folder: one part per input file under parts/, and manifest.json")
    predict.add_argument("--format", choices=["parquet", "csv", "jsonl"], default=None,
                         help="output format; by default the one --output's extension names (.parquet/.pq, "
                         ".csv, .jsonl/.json/.ndjson; a final .gz writes gzip, not for parquet), else parquet. "
                         "A known extension that contradicts --format is refused")
    predict.add_argument("--id-column", default="id", help="column that identifies rows (row numbers when absent)")
    predict.add_argument("--force", action="store_true", help="recompute even if this input was scored by this model version")
    dask = predict.add_mutually_exclusive_group()
    dask.add_argument("--workers", type=int, default=None, metavar="N",
                      help="score each input file as its own part on a local Dask cluster of N worker processes "
                      "(one thread each)")
    dask.add_argument("--dask-address", default=None, metavar="ADDRESS",
                      help="score each input file as its own part on the running Dask cluster whose scheduler is "
                      "at ADDRESS (tcp://host:8786); docs/scoring.md#many-files-on-dask")


def _validate(commands) -> None:
    validate = commands.add_parser(
        "validate", help="validate an incoming batch against the dataset's suite (exit 0 clean, 1 problems, 2 error); "
        "`keel validate profile` infers the suite", formatter_class=DEFAULTS)
    add_dataset_options(validate)
    validate.add_argument("--input", required=True,
                          help="the landed file: CSV (gz or not), parquet, or IDX images; texts: CSV, parquet or JSONL")
    validate.add_argument("--labels", default=None, help="IDX labels file that goes with --input")
    validate.add_argument("--report", default=None, help="report folder (default reports/validation/<dataset>/incoming/<file>-<sha>); "
                          "an existing folder must be empty or an earlier Keel report (marked .keel-report), which is replaced")
    validate.add_argument("--id-column", default="id", help="column that identifies rows, when present")
    validate.add_argument("--curate", action="store_true",
                          help="add the clean rows of an accepted batch to the curated training data (a new dataset version)")

    profile = commands.add_parser("profile", help="infer the dataset's expectation suite from its reference data "
                                  "(also `keel validate profile`)", formatter_class=DEFAULTS)
    add_dataset_options(profile)
    profile.add_argument("--out", default=None, help="suite file (default: the config's expectations:, else conf/expectations/<name>.json)")
    profile.add_argument("--epochs", type=int, default=5, help="autoencoder training epochs")


def _registry(commands) -> None:
    models = commands.add_parser("models", help="list a model's versions, metrics, aliases and alias history")
    models.add_argument("name")

    promote = commands.add_parser("promote", help="make a version champion on purpose (recorded as an override)")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--reason", required=True)

    sign = commands.add_parser("sign", help="sign a registered version with the team key (KEEL_SIGNING_KEY) after checking "
                               "every file against its recorded manifest: versions registered before the key was set, "
                               "or after a key rotation (docs/threat-model.md)")
    sign.add_argument("name")
    sign.add_argument("version")

    rollback = commands.add_parser("rollback", help="make the previous champion champion again")
    rollback.add_argument("name")
    rollback.add_argument("--reason", default="rollback")


def _stack(commands) -> None:
    stack = commands.add_parser(
        "stack", help="the team stack as local processes: Prefect server, MLflow server, a worker per pool, "
        "the landing watcher (settings from KEEL_STACK_* variables, see docs/team-stack.md)")
    stack.add_argument("action", choices=["up", "down", "status", "deploy"],
                       help="up: start and deploy prefect.yaml; down: stop exactly what `up` started; "
                       "status: what runs; deploy: create pools and automations and deploy prefect.yaml "
                       "on the server PREFECT_API_URL names (docker-compose's deploy service)")
    stack.add_argument("--no-deploy", action="store_true", help="up: start the services only")


def _watch(commands) -> None:
    watch = commands.add_parser("watch", help="emit a Prefect event (keel.data.landed) for each file that lands "
                                "in a folder; the validate-incoming deployment runs on it", formatter_class=DEFAULTS)
    add_dataset_options(watch)
    watch.add_argument("--landing", required=True, help="the landing folder (a path or an fsspec URL)")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between scans")
    watch.add_argument("--once", action="store_true", help="stop when a scan finds nothing new")


def _ui(commands) -> None:
    ui = commands.add_parser(
        "ui", help="open this project's history: the Prefect UI on the project's own run database, the MLflow UI "
        "on mlruns/, and reports/ (Data Docs) over http, on loopback ports 4200, 5000 and 4201 (KEEL_UI_PREFECT_PORT, "
        "KEEL_UI_MLFLOW_PORT, KEEL_UI_FILES_PORT); runs until Ctrl-C; in team mode it shows the team's servers")
    ui.add_argument("--stop", action="store_true", help="stop the `keel ui` that runs for this project")
