"""The model registry: resolving a reference to one version, registering a logged model, and
handing out a registered version's files only once Keel has verified them (keel.tracking.trust);
overriding the gate and rolling back by hand, each leaving the gate's verdict as it was and a
record of its own beside it (tags, and lines in the version's description).

How Keel's models are logged and built from those files is the serving layer's
(keel.serving.pyfunc); nothing here unpickles or runs a model.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import yaml

from keel.core.config import TEXT_MODELS
from keel.core.errors import KeelError
from keel.tracking import client as tracking
from keel.tracking.promotion import CHAMPION, current_version, history, keel_section, move_alias, one_line, rollback, when
from keel.tracking.trust import registration_tags, verified_model

# The gate's verdict, written once by the gate (keel.stages.registration) and never changed; a
# person overruling it or rolling a version back leaves tags of their own beside it.
VERDICT_TAG = "keel.verdict"
OVERRIDE_TAG = "keel.override"
ROLLED_BACK_TAG = "keel.rolled_back"
NOTES_HEADING = "#### Gate verdict, overrides and rollbacks (written by Keel)"


@dataclass
class ModelRef:
    """A registered model version, resolved from NAME, NAME@alias or NAME/version."""

    name: str
    version: str
    run_id: str
    reference: str
    architecture: str = ""

    @property
    def image_model(self) -> bool:
        """A model trained on an image folder: it scores photo files, not pixel rows."""
        return self.architecture == "transfer"

    @property
    def text_model(self) -> bool:
        """A model trained on texts: it scores text files (CSV, parquet, JSONL)."""
        return self.architecture in TEXT_MODELS

    @property
    def inputs(self) -> str:
        """What a scoring job reads for it: "photos", "texts" or "pixels" (files of pixel rows)."""
        return "photos" if self.image_model else "texts" if self.text_model else "pixels"

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve_model(client, reference: str) -> ModelRef:
    """NAME (meaning NAME@champion), NAME@alias or NAME/version -> the concrete version."""
    from mlflow.exceptions import MlflowException

    ref = reference.removeprefix("models:/")
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        elif "/" in ref:
            name, number = ref.rsplit("/", 1)
            mv = client.get_model_version(name, number)
        else:
            name = ref
            mv = client.get_model_version_by_alias(name, "champion")
    except MlflowException as exc:
        raise KeelError(f"model {reference} not found in the registry ({exc.message.splitlines()[0]}); "
                        "check the name, alias or version with `keel models NAME`") from None
    return ModelRef(name=name, version=str(mv.version), run_id=mv.run_id or "", reference=reference,
                    architecture=(mv.tags or {}).get("architecture", ""))


def register(client, model_uri: str, name: str, run_id: str, tags: dict[str, str], description: str = "",
             model_description: str = "Keel pixel classifier") -> str:
    """Registers `model_uri` as a new version of `name` and returns the version number."""
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        try:
            client.create_registered_model(name, description=model_description)
        except mlflow.exceptions.MlflowException:
            pass  # created concurrently
    # A logged model's URI (models:/m-<id>) names its LoggedModel; a tracking server insists on
    # getting that id with the source (a local SQLite store does not check).
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    # Every file's sha256 (signed with the team key, if set) goes into the tracking store with
    # the version itself: a load checks the artifacts against it (keel.tracking.trust).
    tags = {**tags, **registration_tags(client, name, model_uri)}
    version = client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags,
                                          description=description, model_id=model_id)
    if model_id:
        _list_version(client, model_id, name, version.version)
    return str(version.version)


def _list_version(client, model_id: str, name: str, version) -> None:
    """Names the new version in its logged model's `mlflow.modelVersions` tag, the JSON list
    [{"name": ..., "version": ...}] that MLflow's tracking server and mlflow.register_model
    write, so the logged model's page shows it registered. MlflowClient.create_model_version
    against a database store (the embedded one) does not write it; a server has, and an entry
    already there is not added twice."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    listed = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    if not any(e.get("name") == name and str(e.get("version")) == str(version) for e in listed):
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(listed + [{"name": name, "version": version}])})


def describe_version(client, name: str, number: str) -> None:
    """Rewrites version `number`'s description: under Keel's summary, the gate's verdict and each
    override and rollback that concerned the version, in words, from the alias history."""
    mv = client.get_model_version(name, number)
    verdict = (mv.tags or {}).get(VERDICT_TAG)
    lines = [f"- the gate: {verdict}" if verdict else "- the gate has not judged this version"]
    for e in history(client, name):
        if e["alias"] != CHAMPION:
            continue
        who = f"by {e['actor']}: {one_line(e['reason'])}"
        if e["kind"] == "override" and e["to"] == str(number):
            lines.append(f"- {when(e)}: made champion by override {who} (v{e.get('from') or '-'} was champion)")
        elif e["kind"] == "rollback" and e["from"] == str(number):
            lines.append(f"- {when(e)}: rolled back {who} (champion back to v{e['to']})")
        elif e["kind"] == "rollback" and e["to"] == str(number):
            lines.append(f"- {when(e)}: champion again by rollback {who} (from v{e['from']})")
    client.update_model_version(name, number, description=keel_section(mv.description, NOTES_HEADING, lines))


def override_champion(client, name: str, number: str, reason: str) -> dict:
    """Makes version `number` champion whatever the gate said (`keel promote --reason`). The gate's
    verdict tag stays as the gate wrote it; the override gets a tag of its own and a line in
    the version's description. Returns the alias event."""
    event = move_alias(client, name, CHAMPION, number, current_version(client, name, CHAMPION), "override", reason)
    client.set_model_version_tag(name, number, OVERRIDE_TAG, f"promoted by {event['actor']} at {when(event)}: {event['reason']}")
    describe_version(client, name, number)
    return event


def roll_back_champion(client, name: str, reason: str) -> dict:
    """Makes the previous champion champion again (`keel rollback`); the version rolled back gets
    a tag saying so, and both versions a line in their descriptions. Returns the alias event."""
    event = rollback(client, name, reason)
    client.set_model_version_tag(name, event["from"], ROLLED_BACK_TAG, f"rolled back by {event['actor']} at "
                                 f"{when(event)}: {event['reason']} (champion back to v{event['to']})")
    for number in (event["from"], event["to"]):
        describe_version(client, name, number)
    return event


@contextmanager
def verified_artifacts(model_uri: str) -> Iterator[tuple[ModelRef, dict[str, str]]]:
    """(the version, its artifacts: key -> local file) of a registered model (`models:/NAME/VERSION`,
    `models:/NAME@alias`, NAME...), in a temporary folder removed when the block ends.

    Every file of the version is downloaded and checked against the manifest Keel recorded at
    registration first (keel.tracking.trust; UntrustedModelError otherwise), and an artifact
    outside the version's folder is refused; nothing is unpickled or run here. The serving
    layer builds the model from these files (keel.serving.pyfunc.load_verified_model)."""
    client = tracking.client()
    ref = resolve_model(client, model_uri)
    with tempfile.TemporaryDirectory(prefix="keel-model-") as tmp:
        folder = verified_model(client, ref.name, ref.version, Path(tmp))
        flavor = (yaml.safe_load((folder / "MLmodel").read_text()) or {}).get("flavors", {}).get("python_function", {})
        artifacts = {key: (folder / spec["path"]).resolve() for key, spec in (flavor.get("artifacts") or {}).items()}
        if any(not path.is_relative_to(folder.resolve()) for path in artifacts.values()):
            raise KeelError(f"model {ref.name} version {ref.version} names artifacts outside its own folder in its "
                            "MLmodel, so Keel does not load it; register the model again with `keel train`")
        yield ref, {key: str(path) for key, path in artifacts.items()}
