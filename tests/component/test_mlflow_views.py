"""What a person sees in the MLflow UI after `keel train`, read from a real embedded store: the
experiment opens on its training runs, a run's name says what ran, the charts are not buried
under per-class metrics, the logged model shows its registered version, and an override and a
rollback leave the gate's verdict standing beside readable lines of who did what."""

import argparse
import json
import uuid

import pandas as pd
import pytest

from keel.core.contracts import RegisteredVersion
from keel.stages.registration import promote_stage
from keel.tracking import client as tracking
from keel.tracking.promotion import (CHAMPION, DESCRIPTION_LIMIT, HISTORY_HEADING, PromotionPolicy, current_version,
                                     history, keel_section, move_alias)
from keel.tracking.registry import NOTES_HEADING, register

KIND = "mlflow.experimentKind"


def test_keel_experiments_are_machine_learning_experiments(keel_home):
    """The MLflow UI opens an experiment on the view its kind calls for (training runs, not GenAI traces)."""
    client = tracking.client()
    new = tracking.experiment_id(client, "keel-new")
    assert client.get_experiment(new).tags[KIND] == "custom_model_development"
    by_hand = client.create_experiment("made-by-hand")
    chosen = client.create_experiment("chosen-kind", tags={KIND: "genai_development"})
    assert tracking.experiment_id(client, "made-by-hand") == by_hand
    assert client.get_experiment(by_hand).tags[KIND] == "custom_model_development"  # added to one without a kind
    assert tracking.experiment_id(client, "chosen-kind") == chosen
    assert client.get_experiment(chosen).tags[KIND] == "genai_development"  # a kind someone chose stays


def test_the_training_run_says_what_ran_in_a_machine_learning_experiment(registered_model):
    client = tracking.client()
    run = client.get_run(registered_model["run"].run_id)
    assert client.get_experiment(run.info.experiment_id).tags[KIND] == "custom_model_development"
    version_id = registered_model["version"].version
    assert run.info.run_name == f"sign-mnist-small-cnn sign-mnist-small@{version_id[:8]} seed 0"
    note = run.data.tags["mlflow.note.content"]  # the run's description on its page
    assert "**cnn**" in note and version_id in note and "seed 0" in note and "Evaluated on the" in note


def _per_class(client, run_id: str) -> list[dict]:
    """The per-class table as MLflow's own reader finds it (by the run's table tag)."""
    run = client.get_run(run_id)
    return client.load_table(run.info.experiment_id, "evaluation/evaluation_per_class.json", run_ids=[run_id]).to_dict("records")


def _same_rows(table: list[dict], expected: list[dict]) -> bool:
    return len(table) == len(expected) and all(
        row["class"] == want["class"] and row["support"] == want["support"]
        and all(row[k] == pytest.approx(want[k], abs=1e-9) for k in ("precision", "recall", "f1"))
        for row, want in zip(table, expected))


def test_per_class_figures_are_a_table_not_metrics(registered_model):
    client = tracking.client()
    run = client.get_run(registered_model["run"].run_id)
    assert "evaluation_accuracy" in run.data.metrics and "evaluation_macro_f1" in run.data.metrics
    assert not [k for k in run.data.metrics if "_precision_" in k or "_recall_" in k]
    expected = registered_model["metrics"]["evaluation"]["per_class"]
    assert len(expected) == 24 and _same_rows(_per_class(client, run.info.run_id), expected)
    assert {"path": "evaluation/evaluation_per_class.json", "type": "table"} in json.loads(
        run.data.tags["mlflow.loggedArtifacts"])  # what MLflow's views list as tables


def test_a_retried_evaluation_leaves_one_row_per_class(keel_home, tmp_path):
    """MlflowClient.log_table appends to a table the run has already; the evaluate task's retry
    logs the same table again and must not list every class twice."""
    from keel.stages.evaluation import _log_table

    client = tracking.client()
    run_id = client.create_run(tracking.experiment_id(client, "keel-retry")).info.run_id
    rows = [{"class": c, "precision": 0.5, "recall": 0.25, "f1": 1 / 3, "support": 4} for c in "ABC"]
    for _ in range(2):
        _log_table(client, run_id, pd.DataFrame(rows), tmp_path / "evaluation_per_class.json")
    assert _same_rows(_per_class(client, run_id), rows)
    assert json.loads(client.get_run(run_id).data.tags["mlflow.loggedArtifacts"]) == [
        {"path": "evaluation/evaluation_per_class.json", "type": "table"}]


def test_the_logged_model_names_its_registered_versions(registered_model):
    client = tracking.client()
    first = registered_model["registered"]
    mv = client.get_model_version(first.name, first.version)
    assert mv.source.startswith("models:/m-")  # the logged model's URI; a SQL store keeps no model_id of its own
    model_id = mv.source.removeprefix("models:/")

    def listed():
        return [(e["name"], str(e["version"])) for e in json.loads(client.get_logged_model(model_id).tags["mlflow.modelVersions"])]

    assert (first.name, first.version) in listed()
    name = f"views-listed-{uuid.uuid4().hex[:8]}"
    number = register(client, mv.source, name, first.run_id, {})
    assert listed().count((name, number)) == 1 and (first.name, first.version) in listed()  # merged, not replaced


@pytest.fixture
def two_versions(registered_model):
    """The session's model registered twice more under a fresh name; v1 champion, v2 judged by the gate
    (the same model again: "not promoted")."""
    client = tracking.client()
    source = client.get_model_version(registered_model["registered"].name, "1")
    name = f"views-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name, description="Keel pixel classifier")
    v1, v2 = (register(client, source.source, name, source.run_id, {}, description=f"copy {i}") for i in (1, 2))
    move_alias(client, name, CHAMPION, v1, None, "gate", "first")
    challenger = RegisteredVersion(name=name, version=v2, model_uri=f"models:/{name}/{v2}", run_id=source.run_id)
    verdict = promote_stage(registered_model["version"], challenger, registered_model["metrics"], PromotionPolicy(floor=0.0))
    assert not verdict.promote and verdict.text().startswith("not promoted")
    return client, name, v1, v2, verdict.text()


def test_an_override_and_a_rollback_keep_the_gates_verdict_and_read_as_lines(two_versions):
    """`keel promote --reason` then `keel rollback`: the gate's "not promoted" stays in keel.verdict,
    each act has a tag of its own, and both descriptions say in words what happened."""
    from cli.registry import promote, roll_back

    client, name, v1, v2, verdict = two_versions
    assert promote(argparse.Namespace(name=name, version=v2, reason="hotfix for ticket 123")) == 0
    assert current_version(client, name, CHAMPION) == v2
    assert roll_back(argparse.Namespace(name=name, reason="v2 misbehaves")) == 0
    assert current_version(client, name, CHAMPION) == v1
    tags = client.get_model_version(name, v2).tags
    assert tags["keel.verdict"] == verdict  # the gate's reasoning, never overwritten
    assert tags["keel.override"].startswith("promoted by ") and tags["keel.override"].endswith(": hotfix for ticket 123")
    assert tags["keel.rolled_back"].startswith("rolled back by ")
    assert tags["keel.rolled_back"].endswith(f": v2 misbehaves (champion back to v{v1})")
    head, notes = client.get_model_version(name, v2).description.split(NOTES_HEADING)
    assert head.strip() == "copy 2"  # what registration wrote stays above Keel's section
    lines = notes.strip().splitlines()
    assert len(lines) == 3 and lines[0] == f"- the gate: {verdict}"
    assert "made champion by override" in lines[1] and "hotfix for ticket 123" in lines[1]
    assert "rolled back" in lines[2] and "v2 misbehaves" in lines[2]
    assert "champion again by rollback" in client.get_model_version(name, v1).description

    moves = history(client, name)  # the store of record: one keel.audit.* tag per move
    assert [(e["kind"], e["from"], e["to"]) for e in moves] == [("gate", None, v1), ("override", v1, v2), ("rollback", v2, v1)]
    head, trail = client.get_registered_model(name).description.split(HISTORY_HEADING)
    assert head.strip() == "Keel pixel classifier"
    lines = trail.strip().splitlines()
    assert len(lines) == len(moves) and all(line.startswith("- ") and " UTC: `champion` v" in line for line in lines)
    assert lines[1].endswith(f"`champion` v{v1} -> v{v2} (override by {moves[1]['actor']}: hotfix for ticket 123)")
    assert lines[2].endswith(f"`champion` v{v2} -> v{v1} (rollback by {moves[2]['actor']}: v2 misbehaves)")


def test_a_long_history_keeps_the_newest_lines_within_mlflows_limit():
    lines = [f"- move {i}: " + "x" * 100 for i in range(200)]
    text = keel_section("summary someone wrote\n\n" + HISTORY_HEADING + "\n\n- an old line", HISTORY_HEADING, lines)
    assert len(text) <= DESCRIPTION_LIMIT and text.startswith("summary someone wrote\n\n" + HISTORY_HEADING)
    assert text.endswith(lines[-1]) and "- an old line" not in text and "earlier lines: `keel models`" in text
