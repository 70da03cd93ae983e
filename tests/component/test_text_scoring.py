"""A registered text model scores raw texts: through Keel's verified loader, MLflow's own loader
and `mlflow models predict`, with its tokenizer inside. One model is trained and registered
through Keel's stages (bert-tiny, one epoch, 300 messages); a second, freshly initialised and
logged in fp32, checks the scores against the torch model exactly."""

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from keel.core.errors import UntrustedModelError
from keel.data.tokenizer import encode, load_tokenizer, pad_batch
from keel.data.versions import DatasetVersion
from keel.serving.pyfunc import load_verified_model
from keel.tracking import client as tracking
from tests.registry_data import artifact_folder
from tests.text_models import LONG_TEXT, MAX_LENGTH, register_tiny_text_model, sms_rows, train_text_model

PROBS = ["prob_ham", "prob_spam"]


@pytest.fixture(scope="module")
def sms() -> pd.DataFrame:
    return sms_rows(300)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("text-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("KEEL_HOME", str(home))
    yield home
    patch.undo()


@pytest.fixture(scope="module")
def trained(home, sms):
    """Trained and registered as `keel train` does (champion of keel-sms-small)."""
    return train_text_model(home, sms)


@pytest.fixture(scope="module")
def tiny(home, sms):
    """Freshly initialised, logged with fp32 inference (keel-sms-tiny)."""
    return register_tiny_text_model(home / "tiny", sms["text"].tolist())


def direct_probabilities(model: torch.nn.Module, tokenizer: Path, texts: list[str]) -> np.ndarray:
    """What the torch model itself gives for `texts`, tokenized by hand, in fp32."""
    ids, _ = encode(load_tokenizer(tokenizer), texts, MAX_LENGTH)
    with torch.no_grad():
        return torch.softmax(model.float()(pad_batch(ids)), dim=1).numpy()


def test_mlflow_loader_scores_raw_texts_as_the_model_does(tiny, sms):
    tracking.client()  # MLflow's own loader reads the process-wide tracking URI, which other tests move
    loaded = mlflow.pyfunc.load_model(f"models:/{tiny['name']}@champion")
    texts = [*sms["text"].head(20), LONG_TEXT]
    out = loaded.predict(pd.DataFrame({"id": range(21), "text": texts}))  # other columns are ignored
    assert list(out.columns) == ["label", "class_name", "confidence", *PROBS]
    np.testing.assert_allclose(out[PROBS].to_numpy(), direct_probabilities(tiny["model"], tiny["tokenizer"], texts),
                               atol=1e-5)
    assert (out["class_name"] == np.where(out["label"] == 0, "ham", "spam")).all()
    assert out["confidence"].to_numpy() == pytest.approx(out[PROBS].max(axis=1).to_numpy())


def test_registration_logs_the_tokenizer_an_example_of_texts_and_the_requirements(trained):
    registered = trained["registered"]
    folder = artifact_folder(registered.name, registered.version)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    artifacts = mlmodel["flavors"]["python_function"]["artifacts"]
    assert set(artifacts) == {"weights", "model_config", "tokenizer"}
    assert (folder / artifacts["tokenizer"]["path"]).read_bytes() == trained["tokenizer"].read_bytes()
    version = DatasetVersion(trained["version"].path)
    assert trained["tokenizer"].read_bytes() == version.tokenizer_path.read_bytes()  # the version's vocabulary
    assert json.loads(mlmodel["signature"]["inputs"]) == [{"type": "string", "name": "text", "required": True}]
    config = json.loads((folder / artifacts["model_config"]["path"]).read_text())
    assert "tokenizer_file" not in config  # a path of the training machine means nothing where the model loads
    assert config["input"] == "text" and config["tokenizer"] == "tokenizer.json" and config["max_length"] == MAX_LENGTH
    assert config["class_names"] == ["ham", "spam"] and config["text_column"] == "text"
    requirements = (folder / "requirements.txt").read_text()
    assert all(f"{name}==" in requirements for name in ("transformers", "tokenizers", "ftfy", "torch"))
    assert (folder / "mlflow_classifier.py").exists() and not list(folder.rglob("*.pkl"))
    example = json.loads((folder / "input_example.json").read_text())
    rows = np.sort(version.indices("evaluation")[:2])
    assert example == {"columns": ["text"], "data": [[version.texts()[int(r)]] for r in rows]}
    client = tracking.client()
    # Keel's summary; below it, the alias history Keel writes there after every alias move.
    assert client.get_registered_model(registered.name).description.split("\n")[0] == "Keel text classifier"
    assert client.get_model_version(registered.name, registered.version).tags["architecture"] == "bert-tiny"


def test_verified_loader_keeps_its_tokenizer_and_refuses_bad_rows_naming_them(trained, sms):
    classifier = load_verified_model(f"models:/{trained['name']}@champion")
    held = Path(classifier.config["tokenizer_file"])
    assert held.read_bytes() == trained["tokenizer"].read_bytes()  # the verified download is gone; this copy is not
    texts = sms["text"].head(40).tolist()
    out = classifier.predict(None, pd.DataFrame({"text": texts}))
    direct = direct_probabilities(trained["model"], trained["tokenizer"], texts)
    atol = 2e-2 if classifier.precision == "bf16" else 1e-5
    np.testing.assert_allclose(out[PROBS].to_numpy(), direct, atol=atol)
    with pytest.raises(ValueError, match=r"^row 2 column text: missing text$"):
        classifier.predict(None, pd.DataFrame({"text": [texts[0], texts[1], None]}))
    with pytest.raises(ValueError, match=r"^row 1 column text holds 7: not a string"):
        classifier.predict(None, pd.DataFrame({"text": pd.Series([texts[0], 7], dtype=object)}))
    with pytest.raises(ValueError, match=r"^row 0 column text: no `text` column"):
        classifier.predict(None, pd.DataFrame({"message": texts}))
    del classifier
    gc.collect()
    assert not held.exists()  # removed with the classifier


def test_a_changed_tokenizer_in_the_artifact_store_is_refused(home, sms):
    """The tokenizer is verified like the weights: a vocabulary swapped in the artifact store
    would silently change every prediction."""
    name = "keel-sms-tampered"
    registered = register_tiny_text_model(home / "tampered", sms["text"].tolist(), name=name)
    folder = artifact_folder(name, registered["version"])
    tokenizer = folder / "artifacts" / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace('"[UNK]"', '"[UNK2]"', 1))
    with pytest.raises(UntrustedModelError, match=r"artifacts/tokenizer\.json"):
        load_verified_model(f"models:/{name}/{registered['version']}")


def _mlflow_predict(model_uri: str, source: Path, content_type: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri()}
    mlflow_cli = os.path.join(os.path.dirname(sys.executable), "mlflow")
    return subprocess.run([mlflow_cli, "models", "predict", "-m", model_uri, "-i", str(source), "-t", content_type,
                           "--env-manager", "local", "-o", str(out)], env=env, capture_output=True, text=True)


def test_mlflow_models_predict_scores_raw_texts(tmp_path, trained, sms):
    texts = [*sms["text"].head(4), 'a text with "quotes", commas,\nand a line break', LONG_TEXT]
    source = tmp_path / "texts.csv"
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_csv(source, index=False)
    records = tmp_path / "texts.json"
    records.write_text(json.dumps({"dataframe_records": [{"text": t} for t in texts]}))
    expected = load_verified_model(f"models:/{trained['name']}@champion").predict(None, pd.DataFrame({"text": texts}))
    for path, content_type in ((source, "csv"), (records, "json")):
        out = tmp_path / f"out-{content_type}.json"
        done = _mlflow_predict(f"models:/{trained['name']}@champion", path, content_type, out)
        assert done.returncode == 0, done.stderr[-3000:]
        predictions = pd.DataFrame(json.loads(out.read_text())["predictions"])
        assert predictions["class_name"].tolist() == expected["class_name"].tolist()
        np.testing.assert_allclose(predictions[PROBS].to_numpy(), expected[PROBS].to_numpy(), atol=1e-4)
