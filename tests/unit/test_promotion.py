"""The champion/challenger gate, the audit trail, overrides, rollback and racing promotions."""

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from keel.stages import pipeline

from keel.tracking.client import client as tracking
from keel.data.datasets import DatasetVersion, class_indices
from keel.training.evaluate import classification_metrics
from keel.tracking.promotion import (CHAMPION, AliasConflict, PromotionError, PromotionPolicy, current_version, decide,
                            history, move_alias, rollback)

POLICY = PromotionPolicy(floor=0.9, max_recall_drop=0.02)
NAMES = ["A", "B", "C"]
TARGETS = np.repeat(np.arange(3), [1334, 1333, 1333])  # 4,000 evaluation rows


def wrong_on(rows_by_class: dict[int, int], skip: dict[int, int] | None = None) -> np.ndarray:
    """Predictions for TARGETS that miss `rows_by_class[k]` rows of class k (after its first `skip[k]`)."""
    predictions = TARGETS.copy()
    for k, count in rows_by_class.items():
        first = np.flatnonzero(TARGETS == k)[(skip or {}).get(k, 0):][:count]
        predictions[first] = (k + 1) % 3
    return predictions


def judge(challenger_predictions, champion_predictions, policy=POLICY, split=None):
    """The gate on the same rows, from per-row predictions (champion v1, challenger v2)."""
    return decide(classification_metrics(TARGETS, challenger_predictions, NAMES),
                  classification_metrics(TARGETS, champion_predictions, NAMES), policy, "2", "1",
                  challenger_predictions == TARGETS, champion_predictions == TARGETS, split=split)


def metrics(accuracy, recalls):
    return {"accuracy": accuracy,
            "per_class": [{"class": c, "recall": r, "support": 10} for c, r in recalls.items()]}


def test_first_model_is_judged_by_the_floor_alone():
    passed = decide(metrics(0.95, {"A": 0.9}), None, POLICY, "1", None)
    assert passed.promote and "no champion yet" in passed.text()
    failed = decide(metrics(0.85, {"A": 0.9}), None, POLICY, "1", None)
    assert not failed.promote and "accuracy 0.8500 is below the floor 0.9000" in failed.text()


def test_clearly_better_model_wins_and_worse_one_loses_with_figures():
    champion = wrong_on({0: 20, 1: 20, 2: 20})  # 60 errors: 0.9850
    challenger = wrong_on({0: 7, 1: 7, 2: 6})  # 20 of the same rows: 0.9950, b = 40, c = 0
    better = judge(challenger, champion)
    assert better.promote
    assert (better.b, better.c, better.rows) == (40, 0, 4000)
    assert better.p_value == pytest.approx(0.5 ** 40) and better.difference == pytest.approx(0.01)
    assert 0.0 < better.ci_low < 0.01 < better.ci_high
    assert re.match(r"promoted: 0\.9950 vs champion v1 0\.9850 \(\+0\.0100, 95 % CI \+0\.0\d{3}\.\.\+0\.0\d{3}, "
                    r"McNemar p = 9\.1e-13\); accuracy 0\.9950 clears the floor 0\.9000; "
                    r"no class's recall fell by more than 0\.0200$", better.text()), better.text()
    assert f"CI {better.ci_low:+.4f}..{better.ci_high:+.4f}" in better.text()

    worse = judge(champion, challenger)
    assert not worse.promote and worse.p_value == 1.0 and worse.difference == pytest.approx(-0.01)
    assert worse.text().startswith("not promoted: no evidence of improvement: 0.9850 vs champion v1 0.9950 (-0.0100, 95 % CI -")


def test_identical_predictions_are_no_evidence_of_improvement():
    same = wrong_on({0: 20, 1: 20, 2: 20})
    verdict = judge(same, same.copy(), PromotionPolicy(floor=0.0))
    assert not verdict.promote
    assert (verdict.b, verdict.c, verdict.p_value, verdict.ci_low, verdict.ci_high) == (0, 0, 1.0, 0.0, 0.0)
    assert verdict.text().startswith("not promoted: no evidence of improvement: 0.9850 vs champion v1 0.9850 "
                                     "(+0.0000, 95 % CI +0.0000..+0.0000, McNemar p = 1.000)")


def test_a_few_discordant_rows_are_not_enough_evidence():
    champion = wrong_on({0: 3})
    three = judge(TARGETS.copy(), champion)  # b = 3, c = 0 on 4,000 rows
    assert (three.b, three.c) == (3, 0) and three.p_value == pytest.approx(0.125)
    assert not three.promote and "no evidence of improvement" in three.text() and "McNemar p = 0.125" in three.text()
    four = judge(TARGETS.copy(), wrong_on({0: 4}))  # the interval clears 0 but McNemar's p = 1/16 does not
    assert four.ci_low > 0 and four.p_value == pytest.approx(1 / 16) and not four.promote
    five = judge(TARGETS.copy(), wrong_on({0: 5}))  # b = 5: p = 1/32 < 0.05 and the interval clears 0
    assert five.promote and five.p_value == pytest.approx(1 / 32) and five.ci_low > 0


def test_same_gain_in_both_directions_is_not_evidence():
    champion = wrong_on({0: 30})
    challenger = wrong_on({0: 22}, skip={0: 30})  # b = 30, c = 22: +0.0020, p ~ 0.17
    verdict = judge(challenger, champion)
    assert (verdict.b, verdict.c) == (30, 22) and verdict.difference == pytest.approx(0.002)
    assert not verdict.promote and verdict.p_value > 0.05 and verdict.ci_low < 0 < verdict.ci_high


def test_min_improvement_and_confidence_are_applied():
    champion = wrong_on({0: 20, 1: 20, 2: 20})
    challenger = wrong_on({0: 7, 1: 7, 2: 6})  # +0.0100, interval about +0.007..+0.013
    demanding = judge(challenger, champion, PromotionPolicy(floor=0.9, min_improvement=0.02))
    assert not demanding.promote and "no evidence of improvement by more than +0.0200: 0.9950 vs" in demanding.text()
    strict = judge(TARGETS.copy(), wrong_on({0: 5}), PromotionPolicy(floor=0.9, confidence=0.99))
    assert not strict.promote and "99 % CI" in strict.text()  # p = 0.031 is not below 0.01


def test_a_class_that_got_worse_blocks_promotion():
    champion = wrong_on({0: 100})  # class A recall 0.9250
    challenger = wrong_on({2: 40})  # A fixed, C falls 1.0000 -> 0.9700: b = 100, c = 40, overall +0.0150
    verdict = judge(challenger, champion)
    assert verdict.p_value < 0.05 and verdict.ci_low > 0 and "no evidence" not in verdict.text()
    assert not verdict.promote
    assert "recall fell by more than 0.0200 for 1 class(es): C 1.0000 -> 0.9700" in verdict.text()


def test_verdict_names_the_split_and_is_json_friendly():
    verdict = judge(wrong_on({0: 7, 1: 7, 2: 6}), wrong_on({0: 20, 1: 20, 2: 20}), split="group-aware split, 4,144 rows")
    assert re.search(r"0\.9950 vs champion v1 0\.9850 \(\+0\.0100, 95 % CI \S+, McNemar p = 9\.1e-13\) "
                     r"on the group-aware split, 4,144 rows; ", verdict.text()), verdict.text()
    plain = verdict.to_dict()
    assert json.loads(json.dumps(plain)) == plain
    assert all(type(plain[k]) is float for k in ("difference", "ci_low", "ci_high", "p_value", "challenger_accuracy"))
    assert all(type(plain[k]) is int for k in ("b", "c", "rows")) and plain["split"] == "group-aware split, 4,144 rows"
    again = judge(wrong_on({0: 7, 1: 7, 2: 6}), wrong_on({0: 20, 1: 20, 2: 20}), split="group-aware split, 4,144 rows")
    assert again.to_dict() == plain  # deterministic: fixed bootstrap seed


def test_a_champion_needs_per_row_results_on_the_same_rows():
    scored = classification_metrics(TARGETS, TARGETS, NAMES)
    with pytest.raises(ValueError, match="per-row correctness"):
        decide(scored, scored, POLICY, "2", "1")
    with pytest.raises(ValueError, match="same rows"):
        decide(scored, scored, POLICY, "2", "1", np.ones(4000, bool), np.ones(3999, bool))


def test_policy_fields():
    assert PromotionPolicy().model_dump() == {"floor": 0.9, "min_improvement": 0.0, "confidence": 0.95,
                                              "max_recall_drop": 0.02}
    assert all(f.description for f in PromotionPolicy.model_fields.values())
    for bad in ({"margin": 0.001}, {"confidence": 0.5}, {"confidence": 1.0}, {"min_improvement": -0.1}):
        with pytest.raises(ValidationError):
            PromotionPolicy(**bad)


@pytest.fixture
def three_versions(registered_model):
    """The session's trained model registered three more times under a fresh name (by Keel, which
    records the files' manifest: the gate loads only such versions)."""
    from keel.tracking.registry import register

    client = tracking.client()
    source = client.get_model_version(registered_model["registered"]["name"], "1")
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


def evaluation_targets(version_dir):
    version = DatasetVersion(Path(version_dir))
    return class_indices(version.labels()[np.sort(version.indices("evaluation"))], version.meta["labels"])


def test_gate_scores_both_versions_on_the_same_rows_and_tags_the_figures(three_versions, registered_model, tmp_path):
    """The same model again: no evidence of improvement, also when its saved predictions are gone."""
    client, name, (v1, v2, v3) = three_versions
    version_dir = registered_model["version"]["version_dir"]
    evaluation = registered_model["metrics"]["evaluation"]
    saved = np.load(evaluation["predictions_path"])
    assert len(saved) == evaluation["rows"] == len(evaluation_targets(version_dir))
    assert (saved == evaluation_targets(version_dir)).mean() == pytest.approx(evaluation["accuracy"])
    for metrics in ({"evaluation": evaluation},  # the predictions evaluate_stage saved
                    {"evaluation": {**evaluation, "predictions_path": str(tmp_path / "gone.npy")}}):  # re-scored
        verdict = pipeline.promote_stage(version_dir, name, v2, metrics, PromotionPolicy(floor=0.0))
        assert not verdict["promote"] and verdict["text"].startswith("not promoted: no evidence of improvement: ")
        assert (verdict["b"], verdict["c"], verdict["p_value"], verdict["rows"]) == (0, 0, 1.0, len(saved))
        tags = client.get_model_version(name, v2).tags
        assert (tags["keel.gate.p_value"], tags["keel.gate.difference"]) == ("1", "+0.000000")
        assert tags["keel.gate.ci"] == "+0.000000..+0.000000 (95 %)" and tags["keel.verdict"] == verdict["text"]
    assert current_version(client, name, CHAMPION) == v1


def test_racing_promotions_leave_one_consistent_champion(three_versions, registered_model, tmp_path):
    """Two challengers finish at once; each must win its gate against the champion it replaces."""
    client, name, (v1, v2, v3) = three_versions
    version_dir = registered_model["version"]["version_dir"]
    # Both challengers claim perfect evaluation predictions; every champion is the real (imperfect) model.
    targets = evaluation_targets(version_dir)
    np.save(tmp_path / "perfect.npy", targets)
    perfect = classification_metrics(targets, targets, DatasetVersion(Path(version_dir)).meta["class_names"])
    claimed = {"evaluation": perfect | {"predictions_path": str(tmp_path / "perfect.npy")}}
    assert (targets != np.load(registered_model["metrics"]["evaluation"]["predictions_path"])).sum() >= 10  # b >= 10
    policy = PromotionPolicy(floor=0.0)
    start = threading.Barrier(2)
    verdicts, failures = {}, []

    def promote(version):
        start.wait()
        try:
            verdicts[version] = pipeline.promote_stage(version_dir, name, version, claimed, policy)
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
    assert all(v["promote"] for v in verdicts.values())
    assert client.search_registered_models(f"name = '{name}.keel-alias-lock'") == []
