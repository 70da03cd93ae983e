"""The champion/challenger gate against a real MLflow registry: overrides, rollback, the
compare-and-set alias move, racing promotions and a stale alias lock (the pure decision rule is in
tests/unit)."""

import threading
import time

import numpy as np
import pytest

from keel.core.contracts import RegisteredVersion
from keel.stages.registration import promote_stage
from keel.tracking import client as tracking
from keel.data.versions import DatasetVersion, class_indices
from keel.training.evaluate import classification_metrics
from keel.tracking.promotion import (CHAMPION, LOCK_SUFFIX, AliasConflict, PromotionError, PromotionPolicy, alias_lock,
                                     current_version, history, move_alias, rollback)


@pytest.fixture
def three_versions(registered_model):
    """The session's trained model registered three more times under a fresh name (by Keel, which
    records the files' manifest: the gate loads only such versions)."""
    from keel.tracking.registry import register

    client = tracking.client()
    source = client.get_model_version(registered_model["registered"].name, "1")
    name = f"race-{threading.get_ident()}-{id(client)}"
    client.create_registered_model(name)
    versions = [register(client, source.source, name, source.run_id, {}) for _ in range(3)]
    move_alias(client, name, CHAMPION, versions[0], None, "gate", "first")
    return client, name, versions


def test_override_and_rollback_are_recorded(three_versions):
    client, name, (v1, v2, v3) = three_versions
    move_alias(client, name, CHAMPION, v2, v1, "override", "hotfix")
    move_alias(client, name, CHAMPION, v3, v2, "gate", "better")
    assert current_version(client, name, CHAMPION) == v3
    rollback(client, name, "v3 misbehaves")
    assert current_version(client, name, CHAMPION) == v2
    rollback(client, name, "v2 too")
    assert current_version(client, name, CHAMPION) == v1
    with pytest.raises(PromotionError, match="no earlier champion"):
        rollback(client, name)
    trail = [(e["from"], e["to"], e["kind"]) for e in history(client, name)]
    assert trail == [(None, v1, "gate"), (v1, v2, "override"), (v2, v3, "gate"),
                     (v3, v2, "rollback"), (v2, v1, "rollback")]
    assert all(e["actor"] and e["time"] for e in history(client, name))


def test_compare_and_set_refuses_a_stale_move(three_versions):
    client, name, (v1, v2, v3) = three_versions
    move_alias(client, name, CHAMPION, v2, v1, "gate", "won")
    with pytest.raises(AliasConflict, match="moved to v"):
        move_alias(client, name, CHAMPION, v3, v1, "gate", "decided against v1")
    assert current_version(client, name, CHAMPION) == v2


def evaluation_targets(version):
    stored = DatasetVersion(version.path)
    return class_indices(stored.labels()[np.sort(stored.indices("evaluation"))], stored.meta["labels"])


def challenger(name: str, number: str) -> RegisteredVersion:
    return RegisteredVersion(name=name, version=number, model_uri=f"models:/{name}/{number}", run_id="")


def test_gate_scores_both_versions_on_the_same_rows_and_tags_the_figures(three_versions, registered_model, tmp_path):
    """The same model again: no evidence of improvement, also when its saved predictions are gone."""
    client, name, (v1, v2, v3) = three_versions
    version = registered_model["version"]
    evaluation = registered_model["metrics"]["evaluation"]
    saved = np.load(evaluation["predictions_path"])
    assert len(saved) == evaluation["rows"] == len(evaluation_targets(version))
    assert (saved == evaluation_targets(version)).mean() == pytest.approx(evaluation["accuracy"])
    for metrics in ({"evaluation": evaluation},  # the predictions evaluate_stage saved
                    {"evaluation": {**evaluation, "predictions_path": str(tmp_path / "gone.npy")}}):  # re-scored
        verdict = promote_stage(version, challenger(name, v2), metrics, PromotionPolicy(floor=0.0))
        assert not verdict.promote and verdict.text().startswith("not promoted: no evidence of improvement: ")
        assert (verdict.b, verdict.c, verdict.p_value, verdict.rows) == (0, 0, 1.0, len(saved))
        assert (verdict.name, verdict.challenger_version, verdict.champion_version) == (name, v2, v1)
        tags = client.get_model_version(name, v2).tags
        assert (tags["keel.gate.p_value"], tags["keel.gate.difference"]) == ("1", "+0.000000")
        assert tags["keel.gate.ci"] == "+0.000000..+0.000000 (95 %)" and tags["keel.verdict"] == verdict.text()
    assert current_version(client, name, CHAMPION) == v1


def test_racing_promotions_leave_one_consistent_champion(three_versions, registered_model, tmp_path):
    """Two challengers finish at once; each must win its gate against the champion it replaces."""
    client, name, (v1, v2, v3) = three_versions
    version = registered_model["version"]
    # Both challengers claim perfect evaluation predictions; every champion is the real (imperfect) model.
    targets = evaluation_targets(version)
    np.save(tmp_path / "perfect.npy", targets)
    perfect = classification_metrics(targets, targets, DatasetVersion(version.path).meta["class_names"])
    claimed = {"evaluation": perfect | {"predictions_path": str(tmp_path / "perfect.npy")}}
    assert (targets != np.load(registered_model["metrics"]["evaluation"]["predictions_path"])).sum() >= 10  # b >= 10
    policy = PromotionPolicy(floor=0.0)
    start = threading.Barrier(2)
    verdicts, failures = {}, []

    def promote(number):
        start.wait()
        try:
            verdicts[number] = promote_stage(version, challenger(name, number), claimed, policy)
        except Exception as exc:  # surfaced below
            failures.append(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in (v2, v3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    moves = [e for e in history(client, name) if e["alias"] == CHAMPION]
    # One unbroken chain v1 -> a -> b: no lost update, no second champion.
    assert [m["from"] for m in moves[1:]] == [moves[0]["to"], moves[1]["to"]]
    assert {moves[1]["to"], moves[2]["to"]} == {v2, v3}
    assert current_version(client, name, CHAMPION) == moves[2]["to"]
    assert all(v.promote for v in verdicts.values())
    assert client.search_registered_models(f"name = '{name}.keel-alias-lock'") == []


class _PausedBreaker:
    """The real MLflow client of a waiter that is paused (a GC pause, a slow network) between
    finding the alias lock stale and deleting it, until another waiter is inside the lock."""

    def __init__(self, client, lock_name: str, saw_stale: threading.Event, other_inside: threading.Event):
        self._client, self._lock_name = client, lock_name
        self._saw_stale, self._other_inside = saw_stale, other_inside

    def __getattr__(self, attribute):
        return getattr(self._client, attribute)

    def get_registered_model(self, name):
        model = self._client.get_registered_model(name)
        if name == self._lock_name:
            self._saw_stale.set()
        return model

    def delete_registered_model(self, name):
        if name == self._lock_name:
            self._other_inside.wait(timeout=3)
        return self._client.delete_registered_model(name)


def test_two_waiters_cannot_both_break_a_stale_alias_lock(keel_home):
    """A holder died and left its lock; two waiters find it stale at once. Exactly one breaks it:
    the other, paused until the first is inside, must not break the first one's fresh lock."""
    client = tracking.client()
    name = "stale-lock"
    lock_name = name + LOCK_SUFFIX
    client.create_registered_model(lock_name, tags={"keel.lock": "dead-holder", "keel.lock.since": str(time.time() - 3600)})
    saw_stale, first_inside = threading.Event(), threading.Event()
    inside, failures = [], []

    def hold(lock_client, started: threading.Event | None, entered: threading.Event | None, seconds: float):
        try:
            if started is not None:
                assert started.wait(timeout=10), "the paused waiter never found the lock stale"
            with alias_lock(lock_client, name, timeout=30):
                began = time.monotonic()
                if entered is not None:
                    entered.set()
                time.sleep(seconds)
                inside.append((began, time.monotonic()))
        except Exception as exc:  # surfaced below
            failures.append(exc)

    paused = threading.Thread(target=hold, args=(_PausedBreaker(client, lock_name, saw_stale, first_inside), None, None, 0.2))
    first = threading.Thread(target=hold, args=(client, saw_stale, first_inside, 1.0))
    paused.start()
    first.start()
    paused.join()
    first.join()
    assert not failures, failures
    (a_in, a_out), (b_in, b_out) = sorted(inside)
    assert a_out <= b_in, f"both waiters held the alias lock at once ({b_in - a_in:.2f} s apart, the first held it {a_out - a_in:.2f} s)"
    assert client.search_registered_models(f"name LIKE '{lock_name}%'") == []  # no lock or breaker left behind
