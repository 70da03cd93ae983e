"""The `keel` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

from flows.prefect_api import TemporaryPrefectAPI, flush_prefect_workers
from keel.core.config import BACKBONES, PIXEL_MODELS
from keel.core.errors import DataValidationError, KeelError
from keel.core.io import refuse_credentials
from keel.core.secrets import install_log_redaction, redact

TRAIN_FIELDS = ["model", "backbone", "weights", "image_size", "head_epochs", "fine_tune_lr_factor", "unfreeze", "workers",
                "epochs", "time_budget", "batch_size", "learning_rate", "label_smoothing", "patience", "seed", "device",
                "precision"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keel", description="Keel: train, evaluate and register models with Prefect and MLflow.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="run the training flow (ingest, validate, train, evaluate, register)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--dataset-config", default="conf/datasets/sign-mnist.yaml", help="dataset YAML file")
    # Training options default to the dataset YAML's `training:` block, then TrainConfig's defaults.
    train.add_argument("--model", choices=[*PIXEL_MODELS, *BACKBONES], default=None,
                       help="architecture: cnn (default), mlp, cnn-wide for pixel tables; a torchvision backbone for image folders")
    train.add_argument("--backbone", default=None, help="image folders: a Keel-registered image model as the backbone, models:/NAME@alias")
    train.add_argument("--weights", default=None, help="image folders: pretrained weights file for the backbone "
                       "(default: the torchvision cache under TORCH_HOME when it holds them; 'none': never)")
    train.add_argument("--image-size", type=int, default=None, help="image folders: training crop size (default 96)")
    train.add_argument("--head-epochs", type=int, default=None, help="image folders: phase 1 epochs, frozen backbone (default 3)")
    train.add_argument("--fine-tune-lr-factor", type=float, default=None,
                       help="image folders: phase 2 learning rate = learning rate x this (default 0.1; 1 without pretrained weights)")
    train.add_argument("--unfreeze", choices=["all", "last"], default=None, help="image folders: what phase 2 trains (default all)")
    train.add_argument("--workers", type=int, default=None, help="image folders: DataLoader worker processes (default 1)")
    train.add_argument("--epochs", type=int, default=None,
                       help="at most this many epochs; the time budget may plan fewer (image folders: phase 2 epochs, no budget); default 40")
    train.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                       help="pixel tables: seconds for the epoch loop; the schedule spans the epochs that fit (0: no budget; default 120)")
    train.add_argument("--batch-size", type=int, default=None, help="default 128")
    train.add_argument("--learning-rate", type=float, default=None, help="peak learning rate of the one-cycle schedule (default 0.003)")
    train.add_argument("--label-smoothing", type=float, default=None, help="label smoothing of the training loss (default 0)")
    train.add_argument("--patience", type=int, default=None, help="epochs without validation improvement before stopping (default 10)")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    train.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None,
                       help="auto: bf16 autocast on GPUs and on CPUs with bf16 instructions")
    train.add_argument("--no-augment", action="store_true", help="train without augmentation")
    train.add_argument("--horizontal-flip", action="store_true", help="add random horizontal flips (off: handedness matters in signs)")
    train.add_argument("--fresh", action="store_true", help="ignore the checkpoint of an interrupted identical run and start over")
    train.add_argument("--resume", action="store_true", help="resume an interrupted identical run (the default; kept for clarity)")
    train.add_argument("--model-name", default=None, help="registered model name (default keel-<dataset>)")
    from keel.tracking.promotion import PromotionPolicy

    for option in ("floor", "min_improvement", "confidence", "max_recall_drop"):
        field = PromotionPolicy.model_fields[option]
        train.add_argument(f"--{option.replace('_', '-')}", type=float, default=field.default,
                           help=f"promotion: {field.description}".replace("%", "%%"))

    predict = commands.add_parser("predict", help="score pixel-row files, or photos with an image model, with a registered model",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    predict.add_argument("--model", required=True, help="NAME (= NAME@champion), NAME@alias or NAME/version")
    predict.add_argument("--input", required=True, help="a CSV (gz or not) or parquet file, or a folder of them; "
                         "for an image model a photo or a folder of photos (rows keyed by relative path)")
    predict.add_argument("--output", required=True, help="the predictions file to write")
    predict.add_argument("--format", choices=["parquet", "csv", "jsonl"], default=None,
                         help="output format; by default the one --output's extension names (.parquet/.pq, "
                         ".csv, .jsonl/.json/.ndjson; a final .gz writes gzip, not for parquet), else parquet. "
                         "A known extension that contradicts --format is refused")
    predict.add_argument("--id-column", default="id", help="column that identifies rows (row numbers when absent)")
    predict.add_argument("--force", action="store_true", help="recompute even if this input was scored by this model version")

    validate = commands.add_parser(
        "validate", help="validate an incoming batch against the dataset's suite (exit 0 clean, 1 problems, 2 error); "
        "`keel validate profile` infers the suite", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _dataset_options(validate)
    validate.add_argument("--input", required=True, help="the landed file: CSV (gz or not), parquet, or IDX images")
    validate.add_argument("--labels", default=None, help="IDX labels file that goes with --input")
    validate.add_argument("--report", default=None, help="report folder (default reports/validation/<dataset>/incoming/<file>-<sha>); "
                          "an existing folder must be empty or an earlier Keel report (marked .keel-report), which is replaced")
    validate.add_argument("--id-column", default="id", help="column that identifies rows, when present")
    validate.add_argument("--curate", action="store_true",
                          help="add the clean rows of an accepted batch to the curated training data (a new dataset version)")

    profile = commands.add_parser("profile", help="infer the dataset's expectation suite from its reference data "
                                  "(also `keel validate profile`)", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _dataset_options(profile)
    profile.add_argument("--out", default=None, help="suite file (default: the config's expectations:, else conf/expectations/<name>.json)")
    profile.add_argument("--epochs", type=int, default=5, help="autoencoder training epochs")

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

    stack = commands.add_parser(
        "stack", help="the team stack as local processes: Prefect server, MLflow server, a worker per pool, "
        "the landing watcher (settings from KEEL_STACK_* variables, see README)")
    stack.add_argument("action", choices=["up", "down", "status", "deploy"],
                       help="up: start and deploy prefect.yaml; down: stop exactly what `up` started; "
                       "status: what runs; deploy: create pools and automations and deploy prefect.yaml "
                       "on the server PREFECT_API_URL names (docker-compose's deploy service)")
    stack.add_argument("--no-deploy", action="store_true", help="up: start the services only")

    watch = commands.add_parser("watch", help="emit a Prefect event (keel.data.landed) for each file that lands "
                                "in a folder; the validate-incoming deployment runs on it",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _dataset_options(watch)
    watch.add_argument("--landing", required=True, help="the landing folder (a path or an fsspec URL)")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between scans")
    watch.add_argument("--once", action="store_true", help="stop when a scan finds nothing new")
    return parser


def _dataset_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--dataset", help="dataset name (conf/datasets/NAME.yaml) or the path of its YAML file")
    group.add_argument("--dataset-config", help="dataset YAML file")


def _dataset_config(args) -> str:
    """The YAML file that --dataset NAME or --dataset-config PATH names; a missing one is a usage error."""
    path = args.dataset_config or args.dataset
    if args.dataset and not args.dataset.endswith((".yaml", ".yml")):
        path = os.path.join("conf", "datasets", f"{args.dataset}.yaml")
    if not os.path.exists(path):
        raise KeelError(f"dataset config {path} does not exist; pass --dataset NAME (conf/datasets/NAME.yaml) or --dataset-config PATH")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["validate", "profile"]:
        argv = ["profile", *argv[2:]]
    args = _parser().parse_args(argv)
    commands = {"train": _train, "predict": _predict, "models": _models, "promote": _promote, "rollback": _rollback,
                "validate": _validate, "profile": _profile, "stack": _stack, "watch": _watch, "sign": _sign}
    # Credentials in URLs and secret environment variables never reach a log line or message.
    install_log_redaction()
    try:
        return commands[args.command](args)
    except DataValidationError as exc:
        print(f"\n{redact(exc)}", file=sys.stderr)
        return 1
    except KeelError as exc:
        print(f"\nkeel {args.command}: {redact(exc)}", file=sys.stderr)
        return 2
    except Exception:
        # Not a user's mistake: a bug or an outage. The traceback helps, the credentials in it do not.
        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        return 1


def _train(args) -> int:
    from pydantic import ValidationError

    from keel.core.config import AugmentConfig, TrainConfig
    from keel.tracking.promotion import PromotionPolicy

    if not os.path.exists(args.dataset_config):
        print(f"keel train: dataset config {args.dataset_config} does not exist; pass --dataset-config PATH", file=sys.stderr)
        return 2
    from keel.core.config import load_dataset_config

    try:
        defaults = load_dataset_config(args.dataset_config).training
        given = {k: getattr(args, k) for k in TRAIN_FIELDS if getattr(args, k) is not None}
        augment = {**defaults.get("augment", {})}
        if args.no_augment:
            augment["enabled"] = False
        if args.horizontal_flip:
            augment["horizontal_flip"] = True
        train = TrainConfig(**{**defaults, **given, "augment": AugmentConfig(**augment)})
        promotion = PromotionPolicy(floor=args.floor, min_improvement=args.min_improvement, confidence=args.confidence,
                                    max_recall_drop=args.max_recall_drop)
    except ValidationError as exc:
        field, message = exc.errors()[0]["loc"][0], exc.errors()[0]["msg"]
        if getattr(args, str(field), None) is not None:
            where = f"--{str(field).replace('_', '-')}"
        else:
            block = "training.augment" if field in AugmentConfig.model_fields and field not in TrainConfig.model_fields \
                else "training"
            where = f"{block}.{field} in {args.dataset_config}"
        print(f"keel train: invalid option {where}: {message}", file=sys.stderr)
        return 2
    if args.fresh and args.resume:
        print("keel train: --fresh and --resume contradict each other; pick one", file=sys.stderr)
        return 2

    started = time.perf_counter()
    api = TemporaryPrefectAPI().start()
    try:
        from flows.training import training_flow

        import great_expectations  # noqa: F401  (validation needs it: import while the API boots)

        with api.serving():
            result = training_flow(dataset_config=args.dataset_config, train=train, fresh=args.fresh,
                                   model_name=args.model_name, promotion=promotion)
    finally:
        api.stop()
    print(summary(result, time.perf_counter() - started))
    return 0


def _predict(args) -> int:
    # Checked before a flow run exists: Prefect stores a run's parameters in its database.
    refuse_credentials(args.input, "--input")
    refuse_credentials(args.output, "--output")
    api = TemporaryPrefectAPI().start()
    try:
        from flows.batch_predict import batch_predict_flow
        from keel.serving.predict import format_of

        fmt = args.format or format_of(args.output) or "parquet"  # the name's format unless --format says
        with api.serving():
            result = batch_predict_flow(model=args.model, input_path=args.input, output=args.output,
                                        format=fmt, force=args.force, id_column=args.id_column)
    finally:
        api.stop()
    print(result["text"])
    return 1 if result["rows_rejected"] else 0


def _validate(args) -> int:
    dataset_config = _dataset_config(args)
    refuse_credentials(args.input, "--input")
    refuse_credentials(args.labels, "--labels")
    api = TemporaryPrefectAPI().start()
    try:
        from flows.validate_incoming import validate_incoming_flow

        with api.serving():
            result = validate_incoming_flow(dataset_config=dataset_config, input_path=args.input, report_dir=args.report,
                                            labels_path=args.labels, id_column=args.id_column, curate=args.curate)
    finally:
        api.stop()
    print(result["text"])
    if "curated" in result:
        curated = result["curated"]
        print(f"curated  {curated['dataset']} version {curated['version']} ({curated['rows']} rows, "
              f"{curated['batches']} accepted batches{'' if curated['added'] else '; this batch was already there'})")
    return result["exit_code"]


def _profile(args) -> int:
    if args.epochs < 1:
        raise KeelError("--epochs must be at least 1")
    dataset_config = _dataset_config(args)
    api = TemporaryPrefectAPI().start()
    try:
        from flows.validate_incoming import profile_flow

        with api.serving():
            result = profile_flow(dataset_config=dataset_config, out=args.out, epochs=args.epochs)
    finally:
        api.stop()
    print(f"suite       {result['suite_path']} ({result['expectations']} expectations)")
    print(f"autoencoder {result['model_uri']} ({result['weights_path']}), threshold {result['threshold']:.4g}")
    print("flagged     " + ", ".join(f"{k.removeprefix('flagged_')} {v:.1%}" for k, v in result["behaviour"].items()))
    return 0


def _stack(args) -> int:
    from ops.stack import Stack, StackSettings, alive, deploy_project, provision

    settings = StackSettings.from_env(deploy=not args.no_deploy)
    if args.action == "up":
        print(Stack(settings).up().describe())
    elif args.action == "down":
        stopped = Stack.load(settings.stack_dir).down()
        print(f"stopped {', '.join(stopped) if stopped else 'nothing (the recorded processes had already exited)'}")
    elif args.action == "status":
        stack = Stack.load(settings.stack_dir)
        print(stack.describe())
        for service in stack.services:
            print(f"  {service.name:14} {'running' if alive(service) else 'NOT RUNNING'}")
        return 0 if all(alive(s) for s in stack.services) else 1
    else:
        api_url = os.environ.get("PREFECT_API_URL")
        if not api_url:
            raise KeelError("stack deploy needs PREFECT_API_URL (the Prefect server to deploy to)")
        provision(api_url, settings.crash_after_seconds)
        deploy_project({})
        print(f"work pools, crash detection and prefect.yaml's deployments are on {api_url}")
    return 0


def _watch(args) -> int:
    from flows.watch import watch

    if not os.environ.get("PREFECT_API_URL"):
        raise KeelError("keel watch emits events to a Prefect server: set PREFECT_API_URL (see `keel stack up`)")
    watch(args.landing, _dataset_config(args), args.interval, args.once, log=lambda line: print(line, flush=True))
    return 0


def _models(args) -> int:
    from keel.tracking.client import client as tracking
    from keel.tracking.promotion import history

    client = tracking.client()
    try:
        versions = client.search_model_versions(f"name='{args.name}'")
    except Exception as exc:
        raise KeelError(f"cannot list {args.name}: {exc}") from None
    if not versions:
        raise KeelError(f"no registered model {args.name}; `keel train` registers one")
    aliases: dict[str, list[str]] = {}
    for alias, number in client.get_registered_model(args.name).aliases.items():
        aliases.setdefault(str(number), []).append(alias)
    print(f"{'version':>7}  {'created (UTC)':19}  {'accuracy':>8}  {'macro-F1':>8}  {'split (evaluation rows)':24}  "
          f"{'dataset version':16}  aliases / verdict")
    for mv in sorted(versions, key=lambda v: int(v.version)):
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(mv.creation_timestamp / 1000))
        tags = mv.tags
        split = f"{tags.get('split.kind', 'random')} ({tags.get('split.evaluation_rows', '?')})"
        print(f"{mv.version:>7}  {created:19}  {tags.get('evaluation_accuracy', '')[:8]:>8}  "
              f"{tags.get('evaluation_macro_f1', '')[:8]:>8}  {split:24}  {tags.get('dataset_version', ''):16}  "
              f"{', '.join(sorted(aliases.get(str(mv.version), []))) or '-'}  {tags.get('keel.verdict', '')}")
    print("\nalias history (oldest first):")
    for event in history(client, args.name):
        print(f"  {event['time'][:19]}  {event['alias']:10}  v{event.get('from') or '-'} -> v{event['to']}  "
              f"[{event['kind']}] by {event['actor']}: {event['reason']}")
    return 0


def _promote(args) -> int:
    from keel.tracking.client import client as tracking
    from keel.tracking.promotion import CHAMPION, current_version, move_alias

    client = tracking.client()
    try:
        client.get_model_version(args.name, args.version)
    except Exception:
        raise KeelError(f"{args.name} has no version {args.version}; see `keel models {args.name}`") from None
    event = move_alias(client, args.name, CHAMPION, args.version, current_version(client, args.name, CHAMPION),
                       "override", args.reason)
    client.set_model_version_tag(args.name, args.version, "keel.verdict", f"promoted by override: {args.reason}")
    print(f"{args.name}@champion: v{event['from'] or '-'} -> v{event['to']} (override by {event['actor']}: {args.reason})")
    return 0


def _sign(args) -> int:
    from keel.tracking.client import client as tracking
    from keel.tracking.trust import sign_version

    signer = sign_version(tracking.client(), args.name, args.version)
    print(f"{args.name} version {args.version}: every file checked against its manifest; signed with team key {signer}")
    return 0


def _rollback(args) -> int:
    from keel.tracking.client import client as tracking
    from keel.tracking.promotion import rollback

    event = rollback(tracking.client(), args.name, args.reason)
    print(f"{args.name}@champion: v{event['from']} -> v{event['to']} (rollback by {event['actor']}: {args.reason})")
    return 0


def summary(result: dict, seconds: float) -> str:
    """What a person wants to read after `keel train`."""
    version, trained, registered = result["version"], result["trained"], result["registered"]
    evaluation = result["metrics"].get("evaluation", {})
    lines = [
        "",
        f"dataset   {version['dataset']} version {version['version']} ({version['rows']} rows, "
        f"{'reused' if version['reused'] else 'ingested'}); validation passed in {result['validation']['seconds']:.2f} s",
        f"training  {trained['epochs_run']}"
        + (f" of {trained['planned_epochs']} planned" if trained.get("planned_epochs") else "")
        + f" epochs (best {trained['best_epoch']}"
        + (", resumed after epoch %d" % trained["resumed_from_epoch"] if trained["resumed_from_epoch"] else "")
        + (f", stopped early: {trained.get('stop_reason') or 'patience'}" if trained["stopped_early"] else "")
        + f") in {trained['loop_seconds']:.1f} s on {trained['device']} ({trained['precision']})",
        f"evaluation accuracy {evaluation.get('accuracy', float('nan')):.4f}, macro-F1 {evaluation.get('macro_f1', float('nan')):.4f} "
        f"on {evaluation.get('rows', 0)} held-out rows",
        f"split     {version.get('split', 'random split')}",
    ]
    leakage = version.get("leakage")
    if leakage:
        lines.append(f"baseline  a 1-nearest-neighbour lookup in the training rows scores {leakage['nn_accuracy']:.4f} "
                     f"on the same rows; {leakage['near_copy_share']:.1%} of them have a near-copy in training")
    if result.get("validation", {}).get("warnings"):
        lines += [f"warning   {w}" for w in result["validation"]["warnings"]]
    if "test" in result["metrics"]:
        test = result["metrics"]["test"]
        lines.append(f"test      accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f} on {test['rows']} rows")
    lines += [
        f"model     {registered['model_uri']} (challenger), run {registered['run_id']}",
        f"verdict   {result['verdict']['text']}",
        f"total     {seconds:.1f} s ({seconds - trained['loop_seconds']:.1f} s outside the training loop)",
    ]
    return "\n".join(lines)


def entry() -> None:
    """The `keel` console script: `main`, then a prompt exit.

    Everything is written and flushed when `main` returns (outputs are atomic, MLflow calls
    are synchronous, Prefect's logs and events are drained). Python's own teardown of torch,
    CUDA libraries and friends then takes ~2.5 s on this machine for nothing, so skip it.
    """
    code = main()
    flush_prefect_workers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
