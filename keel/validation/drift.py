"""Drift of an incoming batch against the reference: labels (PSI, chi-square) and per-image
statistics (Kolmogorov-Smirnov against the reference's quantiles).

A check drifts when its effect size passes the threshold *and* its test is significant:
small batches vary by chance (a 50-row batch has KS D above 0.2 one time in ten with no
drift at all), large ones make any difference significant.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

QUANTILES = np.linspace(0.0, 1.0, 101)
DRIFT_COLUMNS = ["check", "statistic", "value", "threshold", "p_value", "alpha", "drifted"]


def population_stability_index(observed: np.ndarray, expected: np.ndarray, floor: float = 1e-4) -> float:
    """PSI = sum (o - e) ln(o / e) over shares; empty bins are floored so one does not dominate."""
    o = np.maximum(np.asarray(observed, dtype=float), floor)
    e = np.maximum(np.asarray(expected, dtype=float), floor)
    o, e = o / o.sum(), e / e.sum()
    return float(np.sum((o - e) * np.log(o / e)))


def label_drift(counts: np.ndarray, reference_shares: np.ndarray) -> tuple[float, float, float]:
    """(PSI, chi-square statistic, p-value) of class counts against reference shares."""
    from scipy import stats

    counts = np.asarray(counts, dtype=float)
    n = counts.sum()
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    shares = np.asarray(reference_shares, dtype=float)
    expected = shares / shares.sum() * n
    psi = population_stability_index(counts / n, shares)
    chi2, p = stats.chisquare(counts, expected)
    return psi, float(chi2), float(p)


def ks_against_quantiles(sample: np.ndarray, quantiles: list[float]) -> tuple[float, float]:
    """(KS statistic D, p-value) of `sample` against the reference whose quantiles at 0, 1,
    ..., 100 % are given. Both CDFs are steps (the reference's within 1 % of the truth), so
    values many images share -- no saturated pixel at all, say -- compare exactly."""
    from scipy import stats

    sample = np.sort(np.asarray(sample, dtype=float))
    sample = sample[~np.isnan(sample)]
    n = len(sample)
    if n == 0:
        return float("nan"), float("nan")
    q = np.asarray(quantiles, dtype=float)
    points = np.union1d(np.unique(sample), q)
    d = 0.0
    for side in ("right", "left"):  # at each jump and just before it
        batch_cdf = np.searchsorted(sample, points, side=side) / n
        reference_cdf = np.searchsorted(q, points, side=side) / len(q)
        d = max(d, float(np.max(np.abs(batch_cdf - reference_cdf))))
    return d, float(stats.kstwo.sf(d, n))


def drift_table(batch: pd.DataFrame, class_counts: np.ndarray | None, drift: dict) -> pd.DataFrame:
    """One row per check: statistic, value, threshold, p-value, alpha and whether it drifted."""
    alpha = drift["alpha"]
    rows = []
    if class_counts is not None and class_counts.sum() > 0:
        psi, chi2, p = label_drift(class_counts, np.asarray(drift["reference_class_shares"]))
        rows.append(("label distribution", "PSI", psi, drift["label_psi_max"], p, alpha))
    for column, quantiles in drift["reference_quantiles"].items():
        if column not in batch or batch[column].isna().all():
            continue
        d, p = ks_against_quantiles(batch[column].to_numpy(dtype=float), quantiles)
        rows.append((column, "KS D", d, drift["ks_max"], p, alpha))
    table = pd.DataFrame(rows, columns=DRIFT_COLUMNS[:-1])
    table["drifted"] = (table["value"] > table["threshold"]) & (table["p_value"] < table["alpha"])
    return table


def reference_quantiles(values: np.ndarray) -> list[float]:
    """The 0, 1, ..., 100 % quantiles of the reference values, rounded for a readable file."""
    return [round(float(v), 6) for v in np.quantile(np.asarray(values, dtype=float), QUANTILES)]
