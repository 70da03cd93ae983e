"""Masked-language-model pre-training of bert-tiny on a few hundred real SMS messages: BERT's
masking of ordinary tokens only, the one training loop (a resumed run ends with the same
weights), and the registered fill-mask model answering masked sentences with k words."""

import mlflow
import pandas as pd
import pytest
import torch
from torch import nn

from keel.core.config import TrainConfig
from keel.core.errors import ConfigError, KeelError
from keel.core.pretrain_config import PretrainConfig
from keel.data.masking import IGNORE, mask_tokens
from keel.data.tokenizer import SPECIAL, encode, load_tokenizer, pad_batch, train_wordpiece
from keel.modalities import IMAGE_FOLDER, TEXT
from keel.models.masked_lm import MaskedLanguageModel
from keel.models.text import TextClassifier
from keel.models.transfer import ParentModel
from keel.serving.masked_lm import load_backbone, load_verified_mlm
from keel.serving.pyfunc import load_verified_model
from keel.stages.ingest import ingest_stage, stored
from keel.stages.pretrained_registration import register_pretrained_stage
from keel.stages.pretraining import evaluate_pretrained_stage, pretrain_run_stage, pretrain_stage
from keel.tracking import client as tracking
from keel.training.pretrain import pretrain
from tests.text_pretrain_data import sms_config

TINY = PretrainConfig(epochs=1, time_budget=0, max_length=32, batch_size=32, top_k=4)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """300 messages ingested, bert-tiny pre-trained one epoch, scored and registered as
    sms-mlm-small-mlm@pretrained in the module's own store."""
    home = tmp_path_factory.mktemp("mlm-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("KEEL_HOME", str(home))
    config = str(sms_config(home / "data-files", "sms-mlm-small"))
    version = ingest_stage(config)
    run = pretrain_run_stage(config, version, TINY)
    trained = pretrain_stage(run, version, TINY, progress=False)
    metrics = evaluate_pretrained_stage(run, version, trained, TINY)
    registered = register_pretrained_stage(run, version, trained, metrics)
    yield {"home": home, "config": config, "version": version, "dataset": stored(version), "trained": trained,
           "metrics": metrics, "registered": registered}
    patch.undo()


def test_masking_hides_ordinary_tokens_only_bert_style(pretrained):
    dataset = pretrained["dataset"]
    tokenizer = load_tokenizer(dataset.tokenizer_path)
    tokens = pad_batch(encode(tokenizer, dataset.texts(), 32)[0])
    tokens = torch.cat([tokens, torch.tensor([[2, 3] + [0] * (tokens.shape[1] - 2)])])  # a text with no word at all
    special = torch.arange(len(SPECIAL))
    generator = torch.Generator().manual_seed(0)
    chosen_total = ordinary_total = masked = unchanged = 0
    for _ in range(10):
        packed, targets = mask_tokens(tokens, generator, special, 4, tokenizer.get_vocab_size())
        inputs, labels = packed[:, 0], packed[:, 1]
        chosen, ordinary = labels != IGNORE, tokens >= len(SPECIAL)
        assert not (chosen & ~ordinary).any()  # [PAD], [CLS], [SEP], [UNK] are never guessed ...
        assert torch.equal(inputs[~ordinary], tokens[~ordinary])  # ... nor touched
        assert torch.equal(inputs[~chosen], tokens[~chosen])
        assert torch.equal(labels[chosen], tokens[chosen]) and torch.equal(targets, tokens[chosen])
        assert (chosen.any(1) == ordinary.any(1)).all()  # every text with a word guesses one; the empty one none
        chosen_total, ordinary_total = chosen_total + int(chosen.sum()), ordinary_total + int(ordinary.sum())
        masked += int((inputs[chosen] == 4).sum())
        unchanged += int((inputs[chosen] == tokens[chosen]).sum())
    assert 0.14 < chosen_total / ordinary_total < 0.17
    assert 0.77 < masked / chosen_total < 0.83 and 0.08 < unchanged / chosen_total < 0.12


def test_pretraining_runs_through_the_one_loop_and_resumes_to_the_same_weights(pretrained, tmp_path):
    dataset, device = pretrained["dataset"], torch.device("cpu")
    config = TINY.model_copy(update={"epochs": 2})
    straight = pretrain(dataset, config, device, tmp_path / "a.pt", progress=False)

    def stop_after_first(epoch, metrics, model):
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        pretrain(dataset, config, device, tmp_path / "b.pt", on_epoch_end=stop_after_first, progress=False)
    resumed = pretrain(dataset, config, device, tmp_path / "b.pt", progress=False)
    assert isinstance(resumed.model, MaskedLanguageModel)
    assert resumed.resumed_from_epoch == 1 and [h["epoch"] for h in resumed.history] == [1, 2]
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in straight.history]
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)
    assert straight.record["task"] == "fill-mask" and straight.record["tokenizer_source"] == str(dataset.tokenizer_path)


def test_masked_token_accuracy_is_scored_on_the_evaluation_rows(pretrained):
    evaluation = pretrained["metrics"]["evaluation"]
    assert evaluation["rows"] == len(pretrained["dataset"].indices("evaluation")) > 0
    assert evaluation["masked_tokens"] >= evaluation["rows"]  # at least one guess per text
    assert 0.0 <= evaluation["masked_accuracy"] <= evaluation["masked_top_k_accuracy"] <= 1.0
    run = tracking.client().get_run(pretrained["registered"].run_id)
    assert run.data.metrics["evaluation_masked_accuracy"] == pytest.approx(evaluation["masked_accuracy"])
    assert run.info.status == "FINISHED"


def test_the_registered_fill_mask_model_answers_each_mask_with_k_words(pretrained):
    registered = pretrained["registered"]
    uri = f"models:/{registered.name}@pretrained"
    assert registered.name == "sms-mlm-small-mlm" and registered.tags["task"] == "fill-mask"
    texts = pd.DataFrame({"text": ["I will call you [MASK] tonight", "[MASK] me when you get [MASK]"]})
    model = load_verified_mlm(uri)
    out = model.predict(None, texts, {"top_k": 3})
    assert list(out.columns) == ["row", "mask", "rank", "token", "probability"]
    assert out[["row", "mask"]].drop_duplicates().values.tolist() == [[0, 0], [1, 0], [1, 1]]
    assert (out.groupby(["row", "mask"])["rank"].apply(list) == pd.Series([[1, 2, 3]] * 3).values).all()
    assert (out.groupby(["row", "mask"])["probability"].apply(lambda p: p.is_monotonic_decreasing)).all()
    assert not out["token"].isin(SPECIAL).any()
    assert len(model.predict(None, texts.head(1))) == TINY.top_k  # the registered default
    # MLflow's own loader builds the same model from the logged code and files.
    tracking.client()
    loaded = mlflow.pyfunc.load_model(uri)
    pd.testing.assert_frame_equal(loaded.predict(texts, params={"top_k": 3}), out, atol=1e-5)
    with pytest.raises(ValueError, match=r"row 1 has no \[MASK\]"):
        model.predict(None, pd.DataFrame({"text": ["call me [MASK]", "no blank here"]}))
    with pytest.raises(KeelError, match="not a Keel classifier"):  # not a classifier to score texts with
        load_verified_model(uri)


def test_a_backbone_of_the_other_modality_is_one_config_error(pretrained):
    parent = load_backbone(f"models:/{pretrained['registered'].name}@pretrained")
    assert parent.config["registered_version"] == f"models:/{pretrained['registered'].name}/1"
    photos = {"dataset": "photos", "labels": [0, 1], "image": {"channels": 3, "height": 32, "width": 32}}
    with pytest.raises(ConfigError, match="is a bert-tiny text model; only image models"):
        IMAGE_FOLDER.build_model(TrainConfig(model="resnet18", backbone=parent.uri), photos, parent)
    meta = {**pretrained["dataset"].meta, "path": str(pretrained["dataset"].path)}
    image_parent = ParentModel("models:/photos@champion", nn.Linear(2, 2), {"input": "image", "architecture": "transfer"})
    with pytest.raises(ConfigError, match="is an image model and dataset sms-mlm-small holds texts"):
        TEXT.build_model(TrainConfig(model="bert-tiny", backbone=image_parent.uri), meta, image_parent)
    with pytest.raises(ConfigError, match="holds a bert-tiny encoder, not minilm; train it with --model bert-tiny"):
        TEXT.build_model(TrainConfig(model="minilm", backbone=parent.uri), meta, parent)
    with pytest.raises(ConfigError, match="--max-length 64 exceeds the 32 tokens"):
        TEXT.build_model(TrainConfig(model="bert-tiny", backbone=parent.uri, max_length=64), meta, parent)
    network, record = TEXT.build_model(TrainConfig(model="bert-tiny", backbone=parent.uri, max_length=32), meta, parent)
    assert isinstance(network, TextClassifier) and record["pretrained"] == f"registry:{parent.uri}"
    torch.testing.assert_close(network.features.bert.state_dict(), parent.network.encoder.state_dict())


def test_a_backbone_of_another_vocabulary_brings_its_own_tokenizer(pretrained, tmp_path):
    # A parent pre-trained on another version (or dataset) reads with its own vocabulary: the
    # classifier's batches are tokenized with it, not with this version's.
    parent = load_backbone(f"models:/{pretrained['registered'].name}@pretrained")
    other = tmp_path / "other.json"
    train_wordpiece(["entirely different words", "from another corpus"], 200, True).save(str(other))
    stranger = ParentModel(parent.uri, parent.network, {**parent.config, "tokenizer_file": str(other)})
    version = pretrained["dataset"]
    meta = {**version.meta, "path": str(version.path)}
    config = TrainConfig(model="bert-tiny", backbone=parent.uri, max_length=32)
    _, record = TEXT.build_model(config, meta, stranger)
    assert record["tokenizer_source"] == str(other) and record["pretrained"] == f"registry:{parent.uri}"
    rows = version.indices("train")[:16]
    theirs = TEXT.batches(version, rows, config, torch.device("cpu"), train=False, record=record)
    ours = TEXT.batches(version, rows, config, torch.device("cpu"), train=False)
    their_ids = torch.cat([ids[ids != 0] for ids, _ in theirs.epoch(None)])
    our_ids = torch.cat([ids[ids != 0] for ids, _ in ours.epoch(None)])
    assert int(their_ids.max()) < 200 <= int(our_ids.max())  # the other vocabulary's ids, not this version's