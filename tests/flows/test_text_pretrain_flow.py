"""The course's fill-in-the-blank exercise as Keel commands on a few hundred real SMS messages:
`keel pretrain` registers a masked language model, and `keel train --backbone models:/...@pretrained`
fine-tunes a classifier whose encoder starts from it and reads with its tokenizer."""

from pathlib import Path

import pandas as pd
import torch

from cli.main import main
from keel.serving.masked_lm import load_verified_mlm
from keel.serving.pyfunc import load_verified_model
from keel.tracking import client as tracking
from keel.tracking.promotion import current_version
from tests.text_pretrain_data import sms_config

PRETRAIN = ["--epochs", "1", "--max-length", "32", "--batch-size", "32", "--time-budget", "0", "--top-k", "3"]
# --unfreeze last: the encoder's first tensors stay frozen through both phases, so the trained
# classifier still holds them exactly as the registered encoder's.
FINE_TUNE = ["--model", "bert-tiny", "--max-length", "32", "--head-epochs", "1", "--epochs", "1", "--batch-size", "32",
             "--unfreeze", "last", "--floor", "0"]


def test_pretrain_register_then_fine_tune_a_classifier_from_the_registered_encoder(tmp_path, keel_home, capsys):
    config = str(sms_config(tmp_path / "files", "sms-flow"))
    assert main(["pretrain", "--dataset-config", config, *PRETRAIN]) == 0
    printed = capsys.readouterr().out
    assert "masked-token accuracy" in printed and "models:/sms-flow-mlm/1 (pretrained)" in printed
    client = tracking.client()
    assert current_version(client, "sms-flow-mlm", "pretrained") == "1"
    parent = load_verified_mlm("models:/sms-flow-mlm@pretrained")
    answer = parent.predict(None, pd.DataFrame({"text": ["ok i will [MASK] you later"]}))
    assert len(answer) == 3  # --top-k 3 became the registered model's default

    backbone = "models:/sms-flow-mlm@pretrained"
    assert main(["train", "--dataset-config", config, *FINE_TUNE, "--backbone", backbone]) == 0
    child = client.get_model_version("keel-sms-flow", "1")
    assert client.get_run(child.run_id).data.tags["keel.pretrained"] == f"registry:{backbone}"
    classifier = load_verified_model("models:/keel-sms-flow/1")
    assert classifier.config["build"]["parent"] == "models:/sms-flow-mlm/1"
    # Its tokenizer is the parent's file, byte for byte.
    assert Path(classifier.config["tokenizer_file"]).read_bytes() == Path(parent.config["tokenizer_file"]).read_bytes()
    # Its encoder started as the registered one: the tensors that stayed frozen are still the parent's.
    registered, trained = parent.model.encoder.state_dict(), classifier.model.features.bert.state_dict()
    assert registered.keys() == trained.keys()
    for name in ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                 "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.output.dense.weight"):
        torch.testing.assert_close(trained[name].cpu(), registered[name].cpu(), rtol=0, atol=0, msg=name)

    # The encoder is bert-tiny: another architecture is one sentence and exit code 2.
    assert main(["train", "--dataset-config", config, "--model", "minilm", "--max-length", "32",
                 "--backbone", backbone]) == 2
    assert "holds a bert-tiny encoder, not minilm; train it with --model bert-tiny" in capsys.readouterr().err
