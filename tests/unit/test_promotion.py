"""The champion/challenger decision rule: pure functions on predictions and metrics (the gate against a
real registry, overrides, rollback and racing promotions are in tests/component/test_promotion_gate.py)."""

import json
import re

import numpy as np
import pytest
from pydantic import ValidationError

from keel.core.contracts import Verdict
from keel.training.evaluate import classification_metrics
from keel.tracking.promotion import PromotionPolicy, decide

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
    plain = verdict.model_dump()
    assert json.loads(json.dumps(plain)) == plain
    assert Verdict.model_validate_json(verdict.model_dump_json()) == verdict  # as Prefect passes it on
    assert all(type(plain[k]) is float for k in ("difference", "ci_low", "ci_high", "p_value", "challenger_accuracy"))
    assert all(type(plain[k]) is int for k in ("b", "c", "rows")) and plain["split"] == "group-aware split, 4,144 rows"
    again = judge(wrong_on({0: 7, 1: 7, 2: 6}), wrong_on({0: 20, 1: 20, 2: 20}), split="group-aware split, 4,144 rows")
    assert again.model_dump() == plain  # deterministic: fixed bootstrap seed


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
