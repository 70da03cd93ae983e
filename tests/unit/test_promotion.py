"""The champion/challenger gate, the audit trail, overrides, rollback and racing promotions."""

import threading

import pytest

from keel import pipeline, tracking
from keel.promotion import (CHAMPION, AliasConflict, PromotionError, PromotionPolicy, current_version, decide,
                            history, move_alias, rollback)

POLICY = PromotionPolicy(floor=0.9, margin=0.001, max_recall_drop=0.02)


def metrics(accuracy, recalls):
    return {"accuracy": accuracy,
            "per_class": [{"class": c, "recall": r, "support": 10} for c, r in recalls.items()]}


def test_first_model_is_judged_by_the_floor_alone():
    passed = decide(metrics(0.95, {"A": 0.9}), None, POLICY, "1", None)
    assert passed.promote and "no champion yet" in passed.text()
    failed = decide(metrics(0.85, {"A": 0.9}), None, POLICY, "1", None)
    assert not failed.promote and "accuracy 0.8500 is below the floor 0.9000" in failed.text()


def test_better_model_wins_and_worse_one_loses_with_figures():
    champion = metrics(0.9921, {"A": 0.99, "B": 0.99})
    better = decide(metrics(0.9950, {"A": 0.99, "B": 0.995}), champion, POLICY, "2", "1")
    assert better.promote and "beats champion v1 0.9921 by +0.0029" in better.text()
    worse = decide(metrics(0.9912, {"A": 0.99, "B": 0.99}), champion, POLICY, "2", "1")
    assert not worse.promote
    assert "accuracy 0.9912 vs champion v1 0.9921 (-0.0009, needs +0.0010)" in worse.text()


def test_a_class_that_got_worse_blocks_promotion():
    champion = metrics(0.95, {"A": 0.95, "B": 0.95, "C": 0.95})
    challenger = metrics(0.97, {"A": 1.0, "B": 1.0, "C": 0.90})
    verdict = decide(challenger, champion, POLICY, "2", "1")
    assert not verdict.promote
    assert "recall fell by more than 0.0200 for 1 class(es): C 0.9500 -> 0.9000" in verdict.text()


@pytest.fixture
def three_versions(registered_model):
    """The session's trained model registered three more times under a fresh name."""
    client = tracking.client()
    source = client.get_model_version(registered_model["registered"]["name"], "1")
    name = f"race-{threading.get_ident()}-{id(client)}"
    client.create_registered_model(name)
    versions = [str(client.create_model_version(name, source.source, run_id=source.run_id).version) for _ in range(3)]
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


def test_racing_promotions_leave_one_consistent_champion(three_versions, registered_model):
    """Two challengers finish at once; each must win its gate against the champion it replaces."""
    client, name, (v1, v2, v3) = three_versions
    version_dir = registered_model["version"]["version_dir"]
    same = registered_model["metrics"]  # all three versions are the same model: gain 0
    policy = PromotionPolicy(floor=0.0, margin=0.0)
    start = threading.Barrier(2)
    verdicts, failures = {}, []

    def promote(version):
        start.wait()
        try:
            verdicts[version] = pipeline.promote_stage(version_dir, name, version, same, policy)
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
