"""`keel train`'s options are TrainConfig's and PromotionPolicy's fields: one source of names,
types, defaults and help. Usage mistakes exit 2 with one sentence."""

from __future__ import annotations

import pytest
import yaml

from cli.main import main
from cli.options import option_name
from cli.parser import build_parser
from cli.train import _train_config
from keel.core.config import TrainConfig
from keel.tracking.promotion import PromotionPolicy
from tests.conftest import REPO

SIGN_MNIST = "conf/datasets/sign-mnist.yaml"
# A value of each scalar field that differs from its default and passes its checks.
VALUES = {"model": "mlp", "epochs": 3, "time_budget": 30.0, "batch_size": 16, "learning_rate": 0.01,
          "weight_decay": 0.001, "label_smoothing": 0.1, "validation_fraction": 0.2, "patience": 2, "seed": 7,
          "device": "cpu", "precision": "fp32", "backbone": "models:/keel-fruits@champion", "weights": "none",
          "image_size": 64, "head_epochs": 1, "fine_tune_lr_factor": 0.5, "unfreeze": "last", "workers": 0, "max_length": 64,
          "floor": 0.5, "min_improvement": 0.01, "confidence": 0.9, "max_recall_drop": 0.05}


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # conf/datasets/NAME.yaml is relative to the working folder


def parse(*argv: str):
    return build_parser().parse_args(["train", *argv])


def test_every_field_is_an_option_and_an_option_not_given_keeps_the_yaml_then_the_model_default():
    scalar = [name for name in TrainConfig.model_fields if name != "augment"]
    args = parse()
    assert sorted(args.train_fields) == sorted(scalar) and args.promotion_fields == list(PromotionPolicy.model_fields)
    yaml_block = yaml.safe_load((REPO / SIGN_MNIST).read_text()).get("training", {})
    assert _train_config(args, SIGN_MNIST) == TrainConfig(**yaml_block)
    for name in [*scalar, *PromotionPolicy.model_fields]:
        given = parse(option_name(name), str(VALUES[name]))
        assert getattr(given, name) == VALUES[name], name
    settings = _train_config(parse("--epochs", "3", "--no-augment"), SIGN_MNIST)
    assert settings.epochs == 3 and settings.augment.enabled is False
    assert settings.batch_size == yaml_block.get("batch_size", TrainConfig().batch_size)


def test_help_shows_each_fields_description_and_default(capsys):
    with pytest.raises(SystemExit) as done:
        parse("--help")
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for model in (TrainConfig, PromotionPolicy):
        for name, field in model.model_fields.items():
            if name != "augment":
                assert " ".join(field.description.split()) in text, name
    assert "(default: 40)" in text and "(default: 0.9)" in text and "{cnn,mlp,cnn-wide," in text


def test_dataset_by_name(capsys):
    assert _train_config(parse("--dataset", "mnist"), "conf/datasets/mnist.yaml") is not None
    assert main(["train", "--dataset", "no-such-set"]) == 2
    error = capsys.readouterr().err
    assert "unknown dataset no-such-set" in error and "fruits, mnist, sign-mnist" in error


@pytest.mark.parametrize("argv", [
    ["--dataset", "mnist", "--dataset-config", SIGN_MNIST],  # one or the other
    ["--resume"],  # gone: resuming an interrupted identical run is what `keel train` does anyway
    ["--epochs", "many"],
    ["--model", "transformer"],
], ids=["both-datasets", "resume", "not-a-number", "unknown-model"])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as done:
        main(["train", *argv])
    assert done.value.code == 2


def test_an_invalid_value_names_its_option_or_its_yaml_field(tmp_path, capsys):
    assert main(["train", "--epochs", "0"]) == 2
    assert "keel train: invalid option --epochs: Input should be greater than or equal to 1" in capsys.readouterr().err
    config = yaml.safe_load((REPO / SIGN_MNIST).read_text())
    config["training"] = {"augment": {"rotation_degrees": 500}}
    for source in config["train"]:
        source["path"] = str(REPO / "conf" / "datasets" / source["path"])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--dataset-config", str(path)]) == 2
    assert f"invalid option training.augment.rotation_degrees in {path}" in capsys.readouterr().err
