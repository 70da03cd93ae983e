"""Command-line options generated from pydantic models, and the dataset a command names.

The training and promotion options of `keel train` are TrainConfig's and PromotionPolicy's
fields: their names (`--time-budget` for `time_budget`), types, choices, defaults and help
(the fields' descriptions) come from the models, so a field added there is an option here.
An option that is not given is absent from the parsed arguments (argparse.SUPPRESS): the
model's default then applies, after the dataset YAML's `training:` block for TrainConfig.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError

from keel.core.errors import ConfigError

DATASETS_DIR = Path("conf") / "datasets"
DEFAULT_DATASET_CONFIG = str(DATASETS_DIR / "sign-mnist.yaml")


def option_name(field: str) -> str:
    return f"--{field.replace('_', '-')}"


def add_model_options(group, model: type[BaseModel], fields: list[str] | None = None) -> list[str]:
    """An option per scalar field of `model` (all of them, or `fields`) on the parser or
    argument group `group`; returns the field names. A field that holds a model (e.g.
    TrainConfig.augment) has options of its own, written by hand."""
    names = []
    for name, info in model.model_fields.items():
        if fields is not None and name not in fields:
            continue
        kind, choices = _scalar(info.annotation)
        if kind is None:
            if fields is not None:
                raise TypeError(f"{model.__name__}.{name}: {info.annotation} is no command-line type")
            continue
        default = "" if info.default is None else f" (default: {info.default})"
        group.add_argument(option_name(name), dest=name, type=kind, choices=choices, default=argparse.SUPPRESS,
                           help=(info.description or "").replace("%", "%%") + default)
        names.append(name)
    return names


def _scalar(annotation) -> tuple[type | None, list | None]:
    """(argparse type, choices) of a field's annotation: int, float, str, a Literal of strings,
    or one of them | None; (None, None) for anything else."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar(inner[0]) if len(inner) == 1 else (None, None)
    if typing.get_origin(annotation) is typing.Literal:
        values = list(typing.get_args(annotation))
        return (str, values) if all(isinstance(v, str) for v in values) else (None, None)
    if annotation in (int, float, str):
        return annotation, None
    return None, None


def given(args: argparse.Namespace, fields: list[str]) -> dict:
    """The values of the options among `fields` that the command line gave."""
    return {name: getattr(args, name) for name in fields if hasattr(args, name)}


def invalid_option(exc: ValidationError, args: argparse.Namespace, elsewhere: Callable[[str], str]) -> str:
    """The first problem of `exc`, and where it comes from: `--option` when the command line
    gave that field, else `elsewhere(field)` (e.g. "training.FIELD in FILE")."""
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    where = option_name(field) if hasattr(args, field) else elsewhere(field)
    return f"invalid option {where}: {error['msg']}"


def add_dataset_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--dataset NAME (conf/datasets/NAME.yaml) or --dataset-config PATH, one of them."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--dataset", help=f"dataset name: {DATASETS_DIR}/NAME.yaml (or the path of a YAML file)")
    group.add_argument("--dataset-config", help="dataset YAML file" + ("" if required else f" (default: {DEFAULT_DATASET_CONFIG})"))


def dataset_config(args: argparse.Namespace) -> str:
    """The YAML file that --dataset NAME or --dataset-config PATH names (the default dataset
    when a command has one and neither is given); a missing one is a user error that lists
    the datasets there are."""
    if args.dataset and not args.dataset.endswith((".yaml", ".yml")):
        path = DATASETS_DIR / f"{args.dataset}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in DATASETS_DIR.glob("*.yaml"))
            raise ConfigError(f"unknown dataset {args.dataset}: {DATASETS_DIR} holds "
                              f"{', '.join(known) if known else 'no dataset'}; or pass --dataset-config PATH")
        return str(path)
    path = args.dataset or args.dataset_config or DEFAULT_DATASET_CONFIG
    if not Path(path).exists():
        raise ConfigError(f"dataset config {path} does not exist; pass --dataset NAME ({DATASETS_DIR}/NAME.yaml) "
                          "or --dataset-config PATH")
    return path
