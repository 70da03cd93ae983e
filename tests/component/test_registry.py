"""The registered pyfunc model scores raw pixel rows through MLflow's own loader."""

import os

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from keel.tracking import client as tracking


@pytest.fixture
def registered(registered_model):
    return registered_model["registered"], registered_model["model"], registered_model["metrics"]


@pytest.fixture
def registry_home(registered_model):
    return registered_model["home"]


def test_pyfunc_scores_raw_rows_like_the_trained_model(registered, small_rows):
    result, model, _ = registered
    tracking.client()  # MLflow's own loader reads the process-wide tracking URI, which other tests move
    loaded = mlflow.pyfunc.load_model(f"models:/{result.name}/{result.version}")
    rows = small_rows.head(25)  # raw rows: label column included, integer pixels
    out = loaded.predict(rows)
    assert list(out.columns[:3]) == ["label", "class_name", "confidence"]
    assert len(out) == 25 and out.filter(like="prob_").shape[1] == 24
    np.testing.assert_allclose(out.filter(like="prob_").sum(axis=1), 1.0, atol=1e-3)
    assert set(out["label"]) <= set(range(25)) - {9}
    pixels = torch.from_numpy(rows.drop(columns="label").to_numpy(np.float32).reshape(-1, 1, 28, 28) / 255)
    with torch.no_grad():
        direct = model(pixels.contiguous(memory_format=torch.channels_last)).argmax(1).numpy()
    labels = np.array([l for l in range(25) if l != 9])
    agreement = (labels[direct] == out["label"].to_numpy()).mean()
    assert agreement >= 0.9  # bf16 inference may flip a near-tie


def test_registration_tags_aliases_and_run(registered):
    result, _, metrics = registered
    client = tracking.client()
    version = client.get_model_version(result.name, result.version)
    assert version.tags["dataset"] == "sign-mnist-small"
    assert version.tags["dataset_version"] == result.tags["dataset_version"]
    assert float(version.tags["evaluation_accuracy"]) == pytest.approx(metrics["evaluation"]["accuracy"], abs=1e-6)
    assert len(version.tags["git_commit"]) >= 40  # the checkout's commit, not "unknown"
    assert str(client.get_model_version_by_alias(result.name, "challenger").version) == result.version
    assert str(client.get_model_version_by_alias(result.name, "champion").version) == result.version
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["evaluation_accuracy"] == pytest.approx(metrics["evaluation"]["accuracy"])
    assert [h.step for h in client.get_metric_history(result.run_id, "val_accuracy")] == [1]
    artifacts = {a.path for folder in ("training", "evaluation") for a in client.list_artifacts(result.run_id, folder)}
    assert "training/learning_curves.png" in artifacts and "evaluation/evaluation_confusion_matrix.png" in artifacts
    assert run.inputs.dataset_inputs[0].dataset.digest == result.tags["dataset_version"]


def test_pyfunc_rejects_rows_without_pixels(registered):
    result, _, _ = registered
    tracking.client()  # MLflow's own loader reads the process-wide tracking URI, which other tests move
    loaded = mlflow.pyfunc.load_model(f"models:/{result.name}@champion")
    with pytest.raises(Exception, match="pixel"):
        loaded.predict(pd.DataFrame({"label": [1], "pixel1": [3]}))


def test_embedded_store_lives_in_mlruns(registered, registry_home):
    assert (registry_home / "mlruns" / "mlflow.db").exists()
    assert any((registry_home / "mlruns" / "artifacts").iterdir())
    assert sorted(p.name for p in (registry_home / "mlruns").iterdir()) == ["artifacts", "mlflow.db"]


def test_a_retried_registration_makes_the_version_it_finds_the_challenger(registered_model):
    """The register task's first attempt registered the version, then failed (an outage) before it
    moved `challenger`; the retry finds the version, registers nothing twice and finishes the job."""
    from keel.stages.registration import register_stage
    from keel.tracking.promotion import CHALLENGER, current_version, history
    from keel.tracking.registry import register

    client = tracking.client()
    first = registered_model["registered"]
    name = "keel-retried-registration"
    source = client.get_model_version(first.name, first.version)
    number = register(client, source.source, name, first.run_id, {"dataset": "sign-mnist-small"})
    assert current_version(client, name, CHALLENGER) is None  # where the first attempt stopped

    again = register_stage(registered_model["run"], registered_model["version"], registered_model["trained"],
                           registered_model["metrics"], model_name=name)
    assert (again.name, again.version, again.model_uri, again.run_id) == (name, number, f"models:/{name}/{number}", first.run_id)
    assert current_version(client, name, CHALLENGER) == number
    assert [(e["alias"], e["from"], e["to"], e["kind"]) for e in history(client, name)] == [(CHALLENGER, None, number, "registered")]
    assert [str(v.version) for v in client.search_model_versions(f"name='{name}'")] == [number]


# --------------------------------------------------------------------------- a trusted registry
# Every test registers its own version through Keel's registration in one store for this module (a
# fresh database costs seconds); an attacker who can write the artifact store (and nothing else)
# then changes its files.


@pytest.fixture(scope="module")
def trust_store(tmp_path_factory):
    return tmp_path_factory.mktemp("trust-home")


@pytest.fixture
def trust_home(trust_store, monkeypatch):
    monkeypatch.setenv("KEEL_HOME", str(trust_store))
    for variable in ("KEEL_SIGNING_KEY", "KEEL_SIGNING_KEY_PREVIOUS"):
        monkeypatch.delenv(variable, raising=False)
    return trust_store


@pytest.fixture
def trusted(trust_home, small_rows, request):
    from tests.registry_data import register_small_model

    return register_small_model(small_rows, name=f"keel-{request.node.name.removeprefix('test_')[:40]}")


def _load(version: dict, reference: str | None = None):
    from keel.serving.pyfunc import load_verified_model

    return load_verified_model(reference or f"models:/{version['name']}/{version['version']}")


def test_registration_records_every_file_and_an_untampered_version_loads_and_predicts(trusted, small_rows):
    import hashlib
    import json

    from keel.tracking import trust
    from tests.registry_data import artifact_folder

    tags = tracking.client().get_model_version(trusted["name"], trusted["version"]).tags
    manifest = json.loads(tags[trust.MANIFEST_TAG])
    folder = artifact_folder(trusted["name"], trusted["version"])
    on_disk = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in folder.rglob("*") if p.is_file()}
    assert manifest["files"] == on_disk and manifest["model"] == trusted["name"]
    assert {"MLmodel", "artifacts/weights.pt", "artifacts/model_config.json", "code/keel/serving/pyfunc.py"} <= set(on_disk)
    assert tags[trust.DIGEST_TAG] == hashlib.sha256(tags[trust.MANIFEST_TAG].encode()).hexdigest()
    assert trust.SIGNATURE_TAG not in tags  # no team key set

    classifier = _load(trusted, f"models:/{trusted['name']}@champion")
    rows = small_rows.head(20)
    out = classifier.predict(None, rows)
    pixels = torch.from_numpy(rows.drop(columns="label").to_numpy(np.float32).reshape(-1, 1, 28, 28) / 255)
    with torch.no_grad():
        direct = torch.softmax(trusted["model"](pixels), dim=1).numpy()
    np.testing.assert_allclose(out.filter(like="prob_").to_numpy(), direct, atol=1e-4)


def test_a_planted_pickle_is_refused_and_never_runs(trusted, tmp_path):
    import pickle

    from keel.core.errors import UntrustedModelError
    from tests.registry_data import artifact_folder, crafted_pickle

    proof = tmp_path / "the-payload-is-live"
    pickle.loads(crafted_pickle(proof))
    assert proof.exists()  # the planted bytes really run code when unpickled

    marker = tmp_path / "MARKER"
    folder = artifact_folder(trusted["name"], trusted["version"])
    (folder / "artifacts" / "weights.pt").write_bytes(crafted_pickle(marker))
    with pytest.raises(UntrustedModelError, match=(rf"^model {trusted['name']} version 1 holds artifacts/weights\.pt, "
                                                   r"whose sha256 differs from the one Keel recorded, so Keel does not "
                                                   r"load it; the artifact store was changed")):
        _load(trusted)
    # What the probe planted: a pickled python_model (Keel's models hold none: models-from-code).
    (folder / "python_model.pkl").write_bytes(crafted_pickle(marker))
    with pytest.raises(UntrustedModelError, match=r"holds python_model\.pkl, a file Keel did not register"):
        _load(trusted)
    assert not marker.exists()


def test_the_logged_model_holds_no_pickle_and_mlflow_loads_it_with_pickle_disallowed(trusted, tmp_path, small_rows):
    import subprocess
    import sys

    from tests.registry_data import artifact_folder

    folder = artifact_folder(trusted["name"], trusted["version"])
    assert not list(folder.rglob("*.pkl")) and (folder / "mlflow_classifier.py").exists()
    torch.load(folder / "artifacts" / "weights.pt", weights_only=True)  # plain tensors, no pickled objects
    rows = tmp_path / "rows.csv"
    small_rows.head(5).to_csv(rows, index=False)
    code = (f"import mlflow, pandas as pd\n"
            f"mlflow.set_tracking_uri({tracking.tracking_uri()!r})\n"
            f"model = mlflow.pyfunc.load_model('models:/{trusted['name']}@champion')\n"
            f"print(len(model.predict(pd.read_csv({str(rows)!r}))))\n")
    env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip().endswith("5"), done.stderr[-2000:]


def test_a_version_registered_by_hand_is_refused(trusted):
    from keel.core.errors import UntrustedModelError

    client = tracking.client()
    mlflow.register_model(trusted["model_uri"], "by-hand")  # the same files, without Keel's manifest
    assert not any(k.startswith("keel.") for k in client.get_model_version("by-hand", "1").tags)
    with pytest.raises(UntrustedModelError, match=r"^model by-hand version 1 has no manifest recorded by Keel \(it was "
                                                  r"registered by hand"):
        _load({"name": "by-hand", "version": "1"})


def test_an_added_or_removed_file_is_refused(trusted, tmp_path):
    import shutil

    from keel.core.errors import UntrustedModelError
    from tests.registry_data import artifact_folder, crafted_pickle

    folder = artifact_folder(trusted["name"], trusted["version"])
    extra = folder / "code" / "keel" / "sitecustomize.py"
    extra.write_text(f"import os; os.system('touch {tmp_path / 'MARKER'}')\n")
    with pytest.raises(UntrustedModelError, match=r"holds code/keel/sitecustomize\.py, a file Keel did not register"):
        _load(trusted)
    extra.unlink()
    (folder / ".gitignore").write_bytes(crafted_pickle(tmp_path / "MARKER"))  # model-signing skips git files by default
    with pytest.raises(UntrustedModelError, match=r"holds \.gitignore, a file Keel did not register"):
        _load(trusted)
    (folder / ".gitignore").unlink()
    (folder / "registered_model_meta").write_text("model_name: x\n")  # MLflow's own loaders write this file
    _load(trusted)
    (folder / "registered_model_meta").unlink()
    (folder / "registered_model_meta").mkdir()
    (folder / "registered_model_meta" / "hidden.pkl").write_bytes(crafted_pickle(tmp_path / "MARKER"))
    with pytest.raises(UntrustedModelError, match=r"holds registered_model_meta as a folder or link"):
        _load(trusted)
    shutil.rmtree(folder / "registered_model_meta")
    (folder / "artifacts" / "link.pt").symlink_to(folder / "artifacts" / "weights.pt")
    with pytest.raises(UntrustedModelError, match=r"holds artifacts/link\.pt, (a file Keel did not register|which is not "
                                                  r"a plain file)"):
        _load(trusted)
    (folder / "artifacts" / "link.pt").unlink()
    (folder / "input_example.json").unlink()
    with pytest.raises(UntrustedModelError, match=r"lacks input_example\.json, a file Keel registered"):
        _load(trusted)
    assert not (tmp_path / "MARKER").exists()


def test_edited_manifest_tags_are_refused(trusted):
    import json

    from keel.tracking import trust
    from keel.core.errors import UntrustedModelError
    from tests.registry_data import artifact_folder

    client = tracking.client()
    name, version = trusted["name"], trusted["version"]
    folder = artifact_folder(name, version)
    (folder / "artifacts" / "weights.pt").write_bytes(b"swapped weights")
    manifest = json.loads(client.get_model_version(name, version).tags[trust.MANIFEST_TAG])
    manifest["files"]["artifacts/weights.pt"] = "0" * 64
    client.set_model_version_tag(name, version, trust.MANIFEST_TAG, json.dumps(manifest))
    with pytest.raises(UntrustedModelError, match=r"tag that does not match its keel\.manifest_sha256 tag"):
        _load(trusted)


def test_a_signed_version_loads_only_with_its_team_key(trust_home, small_rows, monkeypatch):
    from keel.tracking import trust
    from keel.core.errors import ConfigError, UntrustedModelError
    from tests.registry_data import register_small_model

    team_key, other_key = "team-key-" + "a" * 32, "other-key-" + "b" * 32
    monkeypatch.setenv("KEEL_SIGNING_KEY", team_key)
    signed = register_small_model(small_rows, name="keel-signed")
    tags = tracking.client().get_model_version("keel-signed", "1").tags
    assert tags[trust.KEY_ID_TAG] == trust.key_id(team_key.encode()) and len(tags[trust.SIGNATURE_TAG]) == 64
    assert team_key not in str(tags)
    _load(signed)

    monkeypatch.setenv("KEEL_SIGNING_KEY", other_key)
    with pytest.raises(UntrustedModelError, match=r"^model keel-signed version 1 is signed with team key \w{16}, and "
                                                  r"KEEL_SIGNING_KEY holds key \w{16}"):
        _load(signed)
    monkeypatch.delenv("KEEL_SIGNING_KEY")
    with pytest.raises(UntrustedModelError, match=r"is signed with team key \w{16} and KEEL_SIGNING_KEY is not set"):
        _load(signed)

    # Without the key, the tracking store's tags are what an attacker could rewrite: with a key
    # set, a version whose signature was stripped is refused.
    unsigned = register_small_model(small_rows, name="keel-unsigned")
    monkeypatch.setenv("KEEL_SIGNING_KEY", team_key)
    with pytest.raises(UntrustedModelError, match=r"^model keel-unsigned version 1 is not signed, and a team key is set"):
        _load(unsigned)
    monkeypatch.setenv("KEEL_SIGNING_KEY", "short")
    with pytest.raises(ConfigError, match=r"KEEL_SIGNING_KEY holds a key of 5 characters"):
        _load(signed)


def test_rotating_the_team_key(trust_home, small_rows, monkeypatch):
    from keel.tracking import trust
    from keel.core.errors import UntrustedModelError
    from tests.registry_data import artifact_folder, register_small_model

    old_key, new_key = "old-key-" + "c" * 32, "new-key-" + "d" * 32
    monkeypatch.setenv("KEEL_SIGNING_KEY", old_key)
    version = register_small_model(small_rows, name="keel-rotated")
    monkeypatch.setenv("KEEL_SIGNING_KEY", new_key)
    monkeypatch.setenv("KEEL_SIGNING_KEY_PREVIOUS", old_key)
    _load(version)  # the old key still verifies
    client = tracking.client()
    from cli.main import main

    assert main(["sign", "keel-rotated", "1"]) == 0  # `keel sign`: trust.sign_version
    assert client.get_model_version("keel-rotated", "1").tags[trust.KEY_ID_TAG] == trust.key_id(new_key.encode())
    monkeypatch.delenv("KEEL_SIGNING_KEY_PREVIOUS")
    _load(version)  # re-signed: the old key can go
    (artifact_folder("keel-rotated", "1") / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(UntrustedModelError, match=r"holds MLmodel, whose sha256 differs"):
        trust.sign_version(client, "keel-rotated", "1")  # never vouches for changed files
    assert main(["sign", "keel-rotated", "1"]) == 2


def test_every_registry_load_goes_through_the_verified_loader():
    """No other code path downloads or deserialises a registered model."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    loaders = {"load_model", "download_artifacts", "unwrap_python_model", "load_context"}
    found = set()
    for path in [*root.glob("keel/**/*.py"), *root.glob("tasks/*.py"), *root.glob("flows/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if name in loaders:
                found.add(f"{path.relative_to(root).as_posix()}: {name}")
    # pyfunc.py: log_pyfunc checks the model it logs; load_verified_model builds what keel.tracking.trust verified;
    # masked_lm.py: load_verified_mlm builds a fill-mask model from verified files the same way.
    assert found == {"keel/tracking/trust.py: download_artifacts", "keel/serving/pyfunc.py: load_context",
                     "keel/serving/masked_lm.py: load_context"}


# --------------------------------------------------------------------------- models logged before the sub-packages


def _log_as_before_the_sub_packages(tmp_path, kind: str, artifacts: dict) -> str:
    """Logs a model as Keel did before keel/ became sub-packages: its models-from-code file runs
    `from keel.registry import <kind>`. Registers it and returns its models:/ URI."""
    code = tmp_path / {"PixelClassifier": "mlflow_pixel_classifier.py", "AnomalyScorer": "mlflow_anomaly_scorer.py"}[kind]
    code.write_text(f"from mlflow.models import set_model\n\nfrom keel.registry import {kind}\n\nset_model({kind}())\n")
    client = tracking.client()
    run_id = client.create_run(tracking.experiment_id(client, "keel-before-sub-packages")).info.run_id
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=str(code), artifacts=artifacts)
    version = mlflow.register_model(info.model_uri, f"old-{kind.lower()}")
    return f"models:/old-{kind.lower()}/{version.version}"


def test_a_classifier_registered_before_the_sub_packages_loads_with_mlflow(trust_home, small_rows, tmp_path):
    import json

    from keel.models.networks import build_model
    from tests.registry_data import LABELS, model_config

    torch.manual_seed(0)
    model = build_model("cnn", 1, 28, 28, len(LABELS)).eval()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "model_config.json").write_text(json.dumps(model_config()))
    uri = _log_as_before_the_sub_packages(tmp_path, "PixelClassifier", {
        "weights": str(tmp_path / "weights.pt"), "model_config": str(tmp_path / "model_config.json")})

    rows = small_rows.head(20)
    out = mlflow.pyfunc.load_model(uri).predict(rows)
    pixels = torch.from_numpy(rows.drop(columns="label").to_numpy(np.float32).reshape(-1, 1, 28, 28) / 255)
    with torch.no_grad():
        direct = torch.softmax(model(pixels), dim=1).numpy()
    np.testing.assert_allclose(out.filter(like="prob_").to_numpy(), direct, atol=1e-4)
    assert list(out.columns[:3]) == ["label", "class_name", "confidence"]


def test_an_anomaly_scorer_registered_before_the_sub_packages_loads_with_mlflow(trust_home, small_rows, tmp_path):
    import json

    from keel.models.anomaly import Autoencoder, AutoencoderConfig, TrainedAutoencoder, reconstruction_errors, save_autoencoder

    torch.manual_seed(0)
    autoencoder = Autoencoder(784, 32, 4).eval()
    save_autoencoder(TrainedAutoencoder(autoencoder, AutoencoderConfig(784, 32, 4)), tmp_path / "autoencoder.pt")
    columns = [f"pixel{i}" for i in range(1, 785)]
    (tmp_path / "anomaly_config.json").write_text(json.dumps({"threshold": 0.05, "pixel_columns": columns}))
    uri = _log_as_before_the_sub_packages(tmp_path, "AnomalyScorer", {
        "weights": str(tmp_path / "autoencoder.pt"), "anomaly_config": str(tmp_path / "anomaly_config.json")})

    rows = small_rows.head(20)
    out = mlflow.pyfunc.load_model(uri).predict(rows)
    expected = reconstruction_errors(autoencoder, rows[columns].to_numpy(np.float32))
    np.testing.assert_allclose(out["anomaly_score"].to_numpy(), expected, rtol=1e-5)
    assert (out["anomalous"] == (expected > 0.05)).all()
