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
from keel.core.atomic import atomic_path
from keel.modalities import modality_for
from keel.data.pixel_rule import PIXEL_MAX, PIXEL_MIN
from keel.modalities.expectations import expectation
from keel.validation.drift import reference_quantiles

SUITE_FORMAT = 1
BATCHES = ("schema", "rows", "classes", "drift", "leakage")


def leakage_expectations(config: DatasetConfig) -> list[dict]:
    """The evaluation (and test) rows must not have near-copies in training: the split would
    measure memory, not generalisation. A warning unless the policy says stop_on_leak."""
    policy = config.validation
    return [expectation(
        "expect_column_values_to_be_between",
        f"at most {policy.max_leaked_fraction:.0%} of held-out rows may have a near-copy in training "
        f"(cosine >= {config.evaluation_split.threshold:g})",
        "reject" if policy.stop_on_leak else "warn", column="near_copy_share", max_value=policy.max_leaked_fraction)]


def _drift_expectations() -> list[dict]:
    return [expectation("expect_column_values_to_be_in_set",
                        "labels and image statistics must not drift from the reference past the thresholds",
                        "drift", column="drifted", value_set=[False])]


def structural_suite(config: DatasetConfig) -> dict:
    """A suite from the config alone: its modality's structural expectations (pixel tables:
    schema, labels, pixel ranges; image folders: the stored photos) and classes near a uniform share."""
    k = len(config.labels)
    return {
        "format": SUITE_FORMAT,
        "dataset": config.name,
        "inferred": False,
        "suites": modality_for(config).expectations(config),
        "classes": {"reference_shares": {str(v): 1.0 / k for v in config.labels},
                    "min_ratio": config.validation.min_class_share, "max_ratio": config.validation.max_class_share,
                    "standard_errors": 0.0},
    }


def bounds(values: np.ndarray, widen: float, low: float, high: float) -> tuple[float, float]:
    """The reference's [min, max] widened by `widen` of its range on each side, kept in [low, high]."""
    values = np.asarray(values, dtype=float)
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    pad = widen * (hi - lo)
    return round(max(low, lo - pad), 4), round(min(high, hi + pad), 4)


STATISTIC_RULES = {
    "mean_intensity": ("mean intensity", float(PIXEL_MIN), float(PIXEL_MAX)),
    "std_intensity": ("intensity standard deviation", 0.0, float(PIXEL_MAX - PIXEL_MIN)),
    "saturated_fraction": (f"fraction of pixels at {PIXEL_MIN} or {PIXEL_MAX}", 0.0, 1.0),
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
        learned.append(expectation("expect_column_values_to_be_between",
                                   f"{words} must be within {lo:g}-{hi:g} (the reference's range, widened {widen:.0%})",
                                   "quarantine", column=column, min_value=lo, max_value=hi))
    learned.append(expectation(
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
