"""Honest splits: near-duplicate groups, the evaluation split drawn in whole groups, and the
leakage figures that say whether a split can measure generalisation at all.

Ingest calls `plan_split` for every stored version (pixel tables and image folders alike);
what it returns is stored in the version (groups.npy, the split indices, meta.json), so a
re-run reuses it and every number Keel shows can say which split it comes from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from keel.core.config import DatasetConfig
from keel.data.neardup import GroupingFeatures, Groups, group_ids, groups_from_column, nearest, take

GROUPING_FORMAT = 1  # part of the version id: bump when grouping changes what is stored

# What a split is called wherever a number is shown.
SPLIT_KINDS = {"group": "group-aware", "column": "group-aware (by column)", "random": "random", "file": "file"}


@dataclass
class SplitPlan:
    """Each stored row's group and part, and the figures that describe the split."""

    groups: np.ndarray
    parts: np.ndarray  # "train", "evaluation" or "test" per row
    meta: dict = field(default_factory=dict)

    def indices(self, part: str) -> np.ndarray:
        return np.flatnonzero(self.parts == part).astype(np.int64)

    def figures(self, row_ids: np.ndarray) -> dict:
        """What a version's meta.json records of the split: rows per part, the sha256 of the
        evaluation rows' ids (`row_ids`: one stable text id per stored row), and `meta`."""
        evaluation = self.indices("evaluation")
        return {"train_rows": int(len(self.indices("train"))), "evaluation_rows": int(len(evaluation)),
                "test_rows": int(len(self.indices("test"))),
                "evaluation_ids_sha256": hashlib.sha256("\n".join(row_ids[evaluation]).encode()).hexdigest(),
                **self.meta}


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a deterministic, stratified `fraction` of `labels` (sorted)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        take = int(round(fraction * len(members)))
        take = min(max(take, 1), len(members) - 1) if len(members) >= 2 else 0
        chosen.append(rng.permutation(members)[:take])
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)


def stratified_group_split(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices (sorted) of about `fraction` of each class's rows, taken in whole groups.

    Groups are visited in a seeded random order; a group joins the held-out side when that
    brings the per-class row counts closer to their targets (`fraction` of each class) and
    leaves every class some rows on the other side. This serves groups of one label
    (near-copies of a photo) and groups that span the labels (a signer, a patient) alike.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if not len(labels):
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(groups, return_inverse=True)
    _, label_codes = np.unique(labels, return_inverse=True)
    counts = np.zeros((inverse.max() + 1, label_codes.max() + 1), np.int64)
    np.add.at(counts, (inverse, label_codes), 1)
    totals = counts.sum(axis=0)
    targets = fraction * totals
    taken = np.zeros_like(totals)
    chosen = np.zeros(len(counts), bool)
    for g in rng.permutation(len(counts)):
        after = taken + counts[g]
        if np.abs(after - targets).sum() < np.abs(taken - targets).sum() and not (after >= totals)[counts[g] > 0].any():
            chosen[g] = True
            taken = after
    # Like a stratified row split, every class with rows in two or more groups gets at least
    # one group held out (small data: a tenth of 4 rows rounds to none).
    for code in np.flatnonzero((taken == 0) & ((counts > 0).sum(axis=0) >= 2)):
        for g in rng.permutation(np.flatnonzero((counts[:, code] > 0) & ~chosen)):
            after = taken + counts[g]
            if not (after >= totals)[counts[g] > 0].any():
                chosen[g] = True
                taken = after
                break
    return np.flatnonzero(chosen[inverse]).astype(np.int64)


def holdout(labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int) -> np.ndarray:
    """Positions of a stratified `fraction` of rows, in whole groups when `groups` is given."""
    if groups is None:
        return stratified_split(labels, fraction, seed)
    return stratified_group_split(labels, groups, fraction, seed)


def find_groups(config: DatasetConfig, grouping: GroupingFeatures, column_values=None) -> Groups:
    """The rows' groups: the group column's values when the dataset has one, else
    near-duplicate groups at the configured threshold."""
    if config.group_column:
        return groups_from_column(column_values)
    rule = config.evaluation_split
    method = grouping.method + (f", best of shifts up to {rule.max_shift} px" if rule.max_shift else "")
    return group_ids(grouping.features, rule.threshold, method, grouping.shape, rule.max_shift)


def plan_split(config: DatasetConfig, grouping: GroupingFeatures, labels: np.ndarray, parts: np.ndarray,
               column_values=None) -> SplitPlan:
    """Groups the stored rows by what the modality compares (`grouping`, its
    `grouping_features`), draws the evaluation split from the rows marked "pool" (whole
    groups, unless `by: random`), and measures leakage of evaluation and test against training.

    `parts` is "train", "evaluation", "test" (given by files) or "pool" (to be split) per row.
    """
    rule = config.evaluation_split
    features = grouping.features
    groups = find_groups(config, grouping, column_values)
    parts = np.asarray(parts, dtype=object).copy()
    pool = np.flatnonzero(parts == "pool")
    if len(pool):
        by_group = groups.ids[pool] if rule.by in ("group", "column") else None
        chosen = pool[holdout(labels[pool], by_group, rule.fraction, rule.seed)]
        parts[pool] = "train"
        parts[chosen] = "evaluation"
        kind = rule.by
    else:
        kind = "file"
    parts = parts.astype(str)
    leakage = measure_leakage(features, labels, parts, rule.threshold)
    summary = groups.summary()
    evaluation_groups = np.unique(groups.ids[parts == "evaluation"])
    straddling = np.intersect1d(evaluation_groups, np.unique(groups.ids[parts == "train"]))
    split = {
        **rule.model_dump(), "kind": kind, "name": SPLIT_KINDS[kind],
        "group_column": config.group_column, "grouping": summary,
        "evaluation_groups": int(len(evaluation_groups)), "straddling_groups": int(len(straddling)),
    }
    meta = {"evaluation_split": split, "leakage": leakage,
            "split_description": describe(split, int((parts == "evaluation").sum())),
            "grouping_format": GROUPING_FORMAT}
    return SplitPlan(groups.ids, parts, meta)


def describe(split: dict, evaluation_rows: int) -> str:
    """The split in words, as every figure measured on it names it."""
    grouping = split["grouping"]
    if split["kind"] in ("group", "column"):
        how = (f"groups from column {split['group_column']}" if split["group_column"]
               else f"near-duplicate groups, cosine >= {split['threshold']:g}")
        return (f"group-aware split: {evaluation_rows:,} evaluation rows in {split['evaluation_groups']:,} of "
                f"{grouping['groups']:,} groups ({how})")
    if split["kind"] == "random":
        return f"random split: {evaluation_rows:,} evaluation rows (stratified rows; near-copies may sit in training)"
    return f"file split: {evaluation_rows:,} evaluation rows from the configured files"


def measure_leakage(features: np.ndarray, labels: np.ndarray, parts: np.ndarray, threshold: float) -> dict:
    """For the evaluation and test rows: the share whose nearest training row is a near-copy
    (cosine >= threshold) and the accuracy of a 1-nearest-neighbour lookup in training (a
    memorisation baseline: near 1.0 on a leaked split whatever the model learned)."""
    train = np.flatnonzero(parts == "train")
    out = {"threshold": threshold}
    for part in ("evaluation", "test"):
        rows = np.flatnonzero(parts == part)
        if not len(rows) or not len(train):
            continue
        best, similarity = nearest(take(features, train), take(features, rows))
        near = similarity >= threshold
        out[part] = {
            "rows": int(len(rows)),
            "near_copy_share": round(float(near.mean()), 6),
            "near_copies": int(near.sum()),
            "nn_accuracy": round(float((labels[train][best] == labels[rows]).mean()), 6),
            "median_similarity": round(float(np.median(similarity)), 4),
            "examples": [{"row": int(rows[i]), "train_row": int(train[best[i]]), "similarity": round(float(similarity[i]), 4)}
                         for i in np.argsort(-similarity)[:5] if near[i]],
        }
    return out


def leakage_sentence(part: str, figures: dict, limit: float) -> str:
    """The leakage of one part in words."""
    share, nn = figures["near_copy_share"], figures["nn_accuracy"]
    if share > limit:
        return (f"{share:.0%} of {part} rows have a near-copy in training; a lookup table scores {nn:.3f} here: "
                "this split cannot measure generalisation")
    return (f"{share:.1%} of {part} rows have a near-copy in training (limit {limit:.0%}); "
            f"a 1-nearest-neighbour lookup scores {nn:.3f}")
