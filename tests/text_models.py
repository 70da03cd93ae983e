"""A small real text model registered as Keel registers one (keel.serving.pyfunc, keel.tracking.registry),
and real SMS messages with planted bad rows to score with it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import torch
import yaml

from tests.conftest import REPO

SMS_CSV = REPO / "data" / "sms-spam" / "sms_spam.csv.gz"
MAX_LENGTH = 32
LONG_TEXT = ("Congratulations you have won a free prize call now to claim " * 100)[:5000]


def sms_rows(n: int = 300) -> pd.DataFrame:
    """The first `n` usable messages of the SMS Spam Collection (id, label, text): 35 of its
    5,574 hold cp1252 quotes read as Latin-1 (mojibake, which scoring refuses)."""
    from keel.data.text_rule import text_problems, usable

    rows = pd.read_csv(SMS_CSV, nrows=n + 100)
    return rows[usable(text_problems(rows["text"].tolist()))].head(n).reset_index(drop=True)


def text_model_config(max_length: int = MAX_LENGTH) -> dict:
    """The model config training writes for a bert-tiny on SMS spam (fp32 inference: exact comparisons)."""
    return {"architecture": "bert-tiny", "input": "text", "pretrained": "none", "tokenizer": "tokenizer.json",
            "text_column": "text", "max_length": max_length, "labels": [0, 1], "class_names": ["ham", "spam"],
            "label_column": "label", "inference_precision": "fp32", "dataset": "sms-tiny", "dataset_version": "test"}


def register_tiny_text_model(folder: Path, texts: list[str], name: str = "keel-sms-tiny", seed: int = 0) -> dict:
    """A freshly initialised bert-tiny with a WordPiece vocabulary trained on `texts`, logged with
    its tokenizer and registered as register_stage does, made champion. Returns its name,
    version, run id, model URI, the torch model, its config and the tokenizer file."""
    from keel.core.contracts import ModelSpec
    from keel.data.tokenizer import train_wordpiece
    from keel.models.text import bert_tiny
    from keel.serving.pyfunc import CLASSIFIER, log_pyfunc
    from keel.tracking import client as tracking
    from keel.tracking.registry import register

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = folder / "tokenizer.json"
    trained = train_wordpiece(texts, vocab_size=1000, lowercase=True)
    trained.save(str(tokenizer))
    torch.manual_seed(seed)
    model, build = bert_tiny(trained.get_vocab_size(), MAX_LENGTH, 2)
    config = ModelSpec.model_validate({**text_model_config(), "build": build}).model_dump()
    client = tracking.client()
    run = client.create_run(tracking.experiment_id(client, "keel-text-tests"))
    example = pd.DataFrame({"text": texts[:2]})
    uri = log_pyfunc(run.info.run_id, CLASSIFIER, model.eval(), config, example, {"tokenizer": tokenizer})
    version = register(client, uri, name, run.info.run_id, {"architecture": "bert-tiny"})
    client.set_registered_model_alias(name, "champion", version)
    return {"name": name, "version": version, "run_id": run.info.run_id, "model_uri": uri, "model": model.eval(),
            "config": config, "tokenizer": tokenizer}



def write_sms_config(folder: Path, rows: pd.DataFrame, name: str = "sms-small") -> Path:
    """The shipped sms-spam config pointed at `rows` (written as CSV), with small-data bounds."""
    rows.to_csv(folder / f"{name}.csv", index=False)
    config = yaml.safe_load((REPO / "conf" / "datasets" / "sms-spam.yaml").read_text())
    config.update(name=name, train=[{"path": str(folder / f"{name}.csv")}], validation={"min_rows": 50, "max_rows": 10_000})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def train_text_model(folder: Path, rows: pd.DataFrame) -> dict:
    """A bert-tiny trained one epoch (32 tokens) on `rows` through Keel's stages (ingest, run,
    training, evaluation, registration, gate), as `keel train` does; champion of keel-sms-small."""
    from keel.core.config import TrainConfig
    from keel.stages.evaluation import evaluate_stage
    from keel.stages.ingest import ingest_stage
    from keel.stages.registration import promote_stage, register_stage
    from keel.stages.runs import start_run_stage
    from keel.stages.training import load_trained, train_stage
    from keel.tracking.promotion import PromotionPolicy

    config = str(write_sms_config(folder, rows))
    version = ingest_stage(config)
    train = TrainConfig(model="bert-tiny", epochs=1, batch_size=32, max_length=MAX_LENGTH, time_budget=0)
    run = start_run_stage(config, version, train)
    trained = train_stage(run, version, train, progress=False)
    # Registration closes the run and removes its checkpoint folder: keep the model and its tokenizer.
    model, _ = load_trained(trained.model_path, for_inference=True)
    tokenizer = folder / "trained-tokenizer.json"
    shutil.copyfile(Path(trained.model_path).parent / "tokenizer.json", tokenizer)
    metrics = evaluate_stage(run, version, trained)
    registered = register_stage(run, version, trained, metrics)
    verdict = promote_stage(version, registered, metrics, PromotionPolicy(floor=0.0))
    return {"version": version, "run": run, "trained": trained, "metrics": metrics, "registered": registered,
            "verdict": verdict, "name": registered.name, "model": model, "tokenizer": tokenizer}
