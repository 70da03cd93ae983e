"""Expectation suites: inferred from a reference dataset version, saved as reviewable JSON.

A suite file (conf/expectations/<dataset>.json) holds Great Expectations suites for four
tables Keel builds from a batch, plus what the checks compare against:

- ``schema``: one row per column of the file (name, position, role, how its values read);
- ``rows``: one row per image (label, pixel range and counts of bad pixels, mean and
  standard deviation of intensity, fraction of saturated pixels, anomaly score, id);
- ``classes``: one row per class (rows, share, the share's bounds for a batch of this size);
- ``drift``: one row per drift check (statistic, threshold, p-value).

Every expectation carries ``meta.rule`` (what it says in words), ``meta.on_failure`` (what a
failure does to an incoming batch: ``quarantine`` its rows, ``reject`` the batch, or count
as ``missing_class``/``class_share``/``drift``, which the dataset's policy turns into a
rejection) and optionally ``meta.needs`` (``labels``, ``ids``, ``anomaly_score``, ``training``:
the expectation is skipped when the batch lacks it). Edit bounds in the file like code.

Without a suite file, `structural_suite` builds the same layout from the dataset config alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from keel.core.config import DatasetConfig
from keel.core.errors import ConfigError
from keel.core.io import atomic_path

SUITE_FORMAT = 1
BATCHES = ("schema", "rows", "classes", "drift", "leakage")
# A class must be present when a batch of this size should hold at least this many of it.
MIN_EXPECTED_ROWS = 5


def _expectation(kind: str, rule: str, on_failure: str, needs: str | None = None, **kwargs) -> dict:
    meta = {"rule": rule, "on_failure": on_failure}
    if needs:
        meta["needs"] = needs
    return {"type": kind, "kwargs": kwargs, "meta": meta}


def _schema_expectations(config: DatasetConfig) -> list[dict]:
    n = config.image.n_pixels
    first, last = config.pixel_columns[0], config.pixel_columns[-1]
    return [
        _expectation("expect_column_values_to_be_in_set",
                     f"only {config.label_column}, an id column{', ' + config.group_column if config.group_column else ''} "
                     f"and {first}..{last} may appear",
                     "reject", column="role", value_set=["label", "id", "pixel", *(["group"] if config.group_column else [])]),
        _expectation("expect_column_distinct_values_to_contain_set", f"all {n} pixel columns {first}..{last} must be present",
                     "reject", column="column", value_set=config.pixel_columns),
        _expectation("expect_column_distinct_values_to_contain_set", f"training data needs the label column {config.label_column}",
                     "reject", needs="training", column="column", value_set=[config.label_column]),
        _expectation("expect_column_values_to_be_unique", "column names must be unique", "reject", column="column"),
        _expectation("expect_column_values_to_be_in_set", "pixel columns must read as integers (a text or fractional value spoils the column)",
                     "report", column="pixel_kind", value_set=["integer"]),
    ]


def _row_expectations(config: DatasetConfig) -> list[dict]:
    labels = [str(v) for v in config.labels]
    policy = config.validation
    return [
        _expectation("expect_table_row_count_to_be_between", f"the batch must hold {policy.min_rows}-{policy.max_rows} rows",
                     "reject", min_value=policy.min_rows, max_value=policy.max_rows),
        _expectation("expect_column_values_to_not_be_null", "every row needs a label", "quarantine", needs="labels", column="label"),
        _expectation("expect_column_values_to_be_in_set", f"labels must be one of the configured classes ({', '.join(labels)})",
                     "quarantine", needs="labels", column="label", value_set=labels),
        _expectation("expect_column_values_to_be_in_set", "pixels must not be empty", "quarantine", column="pixel_nulls", value_set=[0]),
        _expectation("expect_column_values_to_be_in_set", "pixels must be numbers", "quarantine", column="pixel_non_numeric", value_set=[0]),
        _expectation("expect_column_values_to_be_in_set", "pixels must be whole numbers", "quarantine", column="pixel_non_integer", value_set=[0]),
        _expectation("expect_column_values_to_be_between", "pixels must be at least 0", "quarantine", column="pixel_min", min_value=0),
        _expectation("expect_column_values_to_be_between", "pixels must be at most 255", "quarantine", column="pixel_max", max_value=255),
        _expectation("expect_column_values_to_be_unique", "ids must be unique within the batch", "quarantine", needs="ids", column="id"),
    ]


def _class_expectations() -> list[dict]:
    return [
        _expectation("expect_column_values_to_be_between",
                     f"every class must be present (each class expected at least {MIN_EXPECTED_ROWS} times in a batch this size)",
                     "missing_class", needs="labels", column="rows", min_value=1,
                     row_condition={"type": "comparison", "column": {"name": "expected_rows"}, "operator": ">=",
                                    "parameter": MIN_EXPECTED_ROWS}),
        _expectation("expect_column_pair_values_a_to_be_greater_than_b",
                     "each class's share must be at least its lower bound (min_share)", "class_share", needs="labels",
                     column_A="share", column_B="min_share", or_equal=True),
        _expectation("expect_column_pair_values_a_to_be_greater_than_b",
                     "each class's share must be at most its upper bound (max_share)", "class_share", needs="labels",
                     column_A="max_share", column_B="share", or_equal=True),
    ]


def leakage_expectations(config: DatasetConfig) -> list[dict]:
    """The evaluation (and test) rows must not have near-copies in training: the split would
    measure memory, not generalisation. A warning unless the policy says stop_on_leak."""
    policy = config.validation
    return [_expectation(
        "expect_column_values_to_be_between",
        f"at most {policy.max_leaked_fraction:.0%} of held-out rows may have a near-copy in training "
        f"(cosine >= {config.evaluation_split.threshold:g})",
        "reject" if policy.stop_on_leak else "warn", column="near_copy_share", max_value=policy.max_leaked_fraction)]


def _drift_expectations() -> list[dict]:
    return [_expectation("expect_column_values_to_be_in_set",
                         "labels and image statistics must not drift from the reference past the thresholds",
                         "drift", column="drifted", value_set=[False])]


def structural_suite(config: DatasetConfig) -> dict:
    """A suite from the config alone: schema, labels, pixel ranges, classes near a uniform share."""
    k = len(config.labels)
    return {
        "format": SUITE_FORMAT,
        "dataset": config.name,
        "inferred": False,
        "suites": {"schema": _schema_expectations(config), "rows": _row_expectations(config),
                   "classes": _class_expectations()},
        "classes": {"reference_shares": {str(v): 1.0 / k for v in config.labels},
                    "min_ratio": config.validation.min_class_share, "max_ratio": config.validation.max_class_share,
                    "standard_errors": 0.0},
    }


def image_folder_expectations(config: DatasetConfig) -> dict[str, list[dict]]:
    """Checks of an image-folder version's stored photos (one row each in its profile): the
    stored size and channels, the photo sizes before resizing, known classes, no photo in two
    splits, the row count, and each class's share near a uniform one."""
    shape, folder, policy = config.image, config.image_folder, config.validation
    rows = [
        _expectation("expect_column_values_to_be_in_set", f"every stored image has {shape.channels} channels",
                     "reject", column="channels", value_set=[shape.channels]),
        _expectation("expect_column_values_to_be_between",
                     f"photos must be at least {folder.min_side} pixels wide", "reject", column="width", min_value=folder.min_side),
        _expectation("expect_column_values_to_be_between",
                     f"photos must be at least {folder.min_side} pixels high", "reject", column="height", min_value=folder.min_side),
        _expectation("expect_column_values_to_be_in_set", "labels must be the dataset's classes", "reject",
                     column="label", value_set=list(config.labels)),
        _expectation("expect_column_values_to_be_in_set",
                     "no photo may be in two splits (same content in train and evaluation leaks the answer)", "reject",
                     column="duplicate_across_splits", value_set=[False]),
        _expectation("expect_table_row_count_to_be_between",
                     f"the dataset must hold {policy.min_rows}-{policy.max_rows} usable photos", "reject",
                     min_value=policy.min_rows, max_value=policy.max_rows),
    ]
    return {"rows": rows, "classes": _class_expectations()}


def bounds(values: np.ndarray, widen: float, low: float, high: float) -> tuple[float, float]:
    """The reference's [min, max] widened by `widen` of its range on each side, kept in [low, high]."""
    values = np.asarray(values, dtype=float)
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    pad = widen * (hi - lo)
    return round(max(low, lo - pad), 4), round(min(high, hi + pad), 4)


STATISTIC_RULES = {
    "mean_intensity": ("mean intensity", 0.0, 255.0),
    "std_intensity": ("intensity standard deviation", 0.0, 255.0),
    "saturated_fraction": ("fraction of pixels at 0 or 255", 0.0, 1.0),
}


def inferred_suite(config: DatasetConfig, profile: pd.DataFrame, reference: dict, anomaly: dict,
                   widen: float = 0.1, share_ratio: float = 3.0, standard_errors: float = 4.0,
                   label_psi_max: float = 0.25, ks_max: float = 0.2, alpha: float = 0.001) -> dict:
    """The structural suite plus what the reference teaches: bounds on per-image statistics
    (its min/max widened by `widen` of the range), class shares with tolerances, drift
    references and thresholds, and the autoencoder's anomaly threshold."""
    doc = structural_suite(config)
    doc["inferred"] = True
    doc["reference"] = reference
    rows = doc["suites"]["rows"]
    learned = []
    for column, (words, low, high) in STATISTIC_RULES.items():
        lo, hi = bounds(profile[column].to_numpy(), widen, low, high)
        learned.append(_expectation("expect_column_values_to_be_between",
                                    f"{words} must be within {lo:g}-{hi:g} (the reference's range, widened {widen:.0%})",
                                    "quarantine", column=column, min_value=lo, max_value=hi))
    learned.append(_expectation(
        "expect_column_values_to_be_between",
        f"anomaly score (autoencoder reconstruction error) must be at most {anomaly['threshold']:.6g} "
        f"({anomaly['percentile']:g}th percentile of unseen reference images x {anomaly['margin']:g})",
        "quarantine", needs="anomaly_score", column="anomaly_score", max_value=anomaly["threshold"]))
    doc["suites"]["rows"] = rows[:-1] + learned + rows[-1:]
    doc["suites"]["drift"] = _drift_expectations()

    counts = profile["label"].astype(str).value_counts()
    shares = {str(v): round(float(counts.get(str(v), 0)) / max(len(profile), 1), 6) for v in config.labels}
    doc["classes"] = {"reference_shares": shares, "min_ratio": round(1.0 / share_ratio, 4), "max_ratio": share_ratio,
                      "standard_errors": standard_errors}
    from keel.validation.drift import reference_quantiles

    doc["drift"] = {
        "label_psi_max": label_psi_max, "ks_max": ks_max, "alpha": alpha,
        "reference_class_shares": [shares[str(v)] for v in config.labels],
        "reference_quantiles": {column: reference_quantiles(profile[column].to_numpy()) for column in STATISTIC_RULES},
    }
    doc["drift"]["reference_quantiles"]["anomaly_score"] = anomaly.pop("reference_quantiles")
    doc["anomaly"] = anomaly
    return doc


@dataclass
class Suite:
    """A loaded suite document and where it came from (None: built from the config)."""

    doc: dict
    path: Path | None

    @property
    def inferred(self) -> bool:
        return bool(self.doc.get("inferred"))

    @property
    def name(self) -> str:
        return str(self.path) if self.path else f"structural suite of {self.doc['dataset']}"

    def expectations(self, batch: str, available: set[str]) -> list[dict]:
        """The batch's expectations whose needs are met (`available`: labels, ids, ...)."""
        return [e for e in self.doc["suites"].get(batch, [])
                if e.get("meta", {}).get("needs") in (None, *available)]

    @property
    def classes(self) -> dict:
        return self.doc["classes"]

    @property
    def drift(self) -> dict | None:
        return self.doc.get("drift")

    @property
    def anomaly(self) -> dict | None:
        return self.doc.get("anomaly")

    def anomaly_weights(self) -> Path | None:
        if not self.anomaly or self.path is None:
            return None
        return self.path.parent / self.anomaly["weights"]


def suite_path(config: DatasetConfig) -> Path | None:
    return Path(config.resolve(config.expectations)) if config.expectations else None


def load_suite(config: DatasetConfig) -> Suite:
    """The config's suite file, or the structural suite when the config names none."""
    path = suite_path(config)
    if path is None:
        return Suite(structural_suite(config), None)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: the expectation suite named by the {config.name} config does not exist; "
                          f"run `keel validate profile --dataset-config ...` to infer it") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); fix the edit or re-run `keel validate profile`") from None
    if doc.get("format") != SUITE_FORMAT or doc.get("dataset") != config.name:
        raise ConfigError(f"{path}: a suite of format {doc.get('format')} for dataset {doc.get('dataset')!r}; "
                          f"expected format {SUITE_FORMAT} for {config.name!r}")
    missing = [b for b in ("schema", "rows", "classes") if b not in doc.get("suites", {})]
    if missing:
        raise ConfigError(f"{path}: suites {', '.join(missing)} are missing; re-run `keel validate profile`")
    return Suite(doc, path)


def dumps(doc: dict) -> str:
    """JSON with 2-space indents and short lists of scalars on one line (easy to review)."""
    text = json.dumps(doc, indent=2)
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"


def write_suite(doc: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(dumps(doc))
