"""The per-row profile of a pixel table: what validation checks instead of every pixel.

One row per input row: where it came from (split, file, source, row, line, id, group), its
label, its pixel count, min and max, the counts of null, non-numeric and non-integer pixels,
the first pixel that breaks the rule of keel.data.pixel_rule (and its value), and the image
statistics the inferred suite bounds and the drift checks compare.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from keel.data.pixel_rule import PIXEL_MAX, PIXEL_MIN, invalid_pixels, pixel_problems

PROFILE_COLUMNS = [
    "split", "file", "source", "row", "line", "id", "group", "label", "pixel_count", "pixel_min", "pixel_max",
    "pixel_nulls", "pixel_non_numeric", "pixel_non_integer", "bad_pixel", "bad_value",
    "mean_intensity", "std_intensity", "saturated_fraction",
]
# Per-image statistics the inferred suite bounds and the drift checks compare.
IMAGE_STATISTICS = ["mean_intensity", "std_intensity", "saturated_fraction"]


@dataclass
class ParsedTable:
    """One source file parsed: its header, raw labels, pixel matrix and per-row profile."""

    header: list[str]
    labels: pd.Series
    pixels: np.ndarray | None  # None when the columns do not form the configured image
    profile: pd.DataFrame
    table: pa.Table | None = None  # the rows as read (CSV/parquet), for writing subsets back out
    skipped: list[dict] = field(default_factory=list)  # CSV lines the parser could not split into the header's fields
    kinds: dict[str, str] = field(default_factory=dict)  # pixel columns that do not read as integers: their kind
    non_numeric: np.ndarray | None = None  # which pixels held text, when any did


def pixel_profile(matrix: np.ndarray, non_numeric: np.ndarray | None, names: list[str],
                  labels: pd.Series, file: str, split: str) -> pd.DataFrame:
    """One row of statistics per input row: what the expectation suite checks."""
    n, p = matrix.shape
    profile = pd.DataFrame({"split": split, "file": file, "source": "", "row": np.arange(1, n + 1, dtype=np.int64),
                            "line": np.arange(2, n + 2, dtype=np.int64), "id": "", "group": "",
                            "label": labels.reset_index(drop=True), "pixel_count": np.full(n, p, dtype=np.int64)})
    if p == 0:
        profile["pixel_min"] = profile["pixel_max"] = np.nan
        profile["pixel_nulls"] = profile["pixel_non_numeric"] = profile["pixel_non_integer"] = 0
    elif matrix.dtype.kind != "f":
        profile["pixel_min"] = matrix.min(axis=1)
        profile["pixel_max"] = matrix.max(axis=1)
        profile["pixel_nulls"] = profile["pixel_non_numeric"] = profile["pixel_non_integer"] = 0
    else:
        missing = np.isnan(matrix)
        row_min = np.where(missing, np.inf, matrix).min(axis=1)
        row_max = np.where(missing, -np.inf, matrix).max(axis=1)
        row_min[np.isinf(row_min)] = np.nan
        row_max[np.isinf(row_max)] = np.nan
        problems = pixel_problems(matrix, non_numeric)
        profile["pixel_min"] = row_min
        profile["pixel_max"] = row_max
        for column in ("pixel_nulls", "pixel_non_numeric", "pixel_non_integer"):
            profile[column] = problems[column].sum(axis=1)
    profile["bad_pixel"], profile["bad_value"] = _first_bad_pixels(matrix, non_numeric, names)
    for name, values in image_statistics(matrix).items():
        profile[name] = values
    return profile[PROFILE_COLUMNS]


def _first_bad_pixels(matrix: np.ndarray, non_numeric: np.ndarray | None,
                      names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first pixel that breaks the rule (its column name) and its value ("" when none)."""
    n, p = matrix.shape
    bad_pixel = np.full(n, "", dtype=object)
    bad_value = np.full(n, "", dtype=object)
    if not p:
        return bad_pixel, bad_value
    bad = invalid_pixels(matrix, non_numeric)
    bad_rows = np.flatnonzero(bad.any(axis=1))
    for row, col in zip(bad_rows, bad[bad_rows].argmax(axis=1)):
        bad_pixel[row] = names[col]
        value = matrix[row, col]
        if non_numeric is not None and non_numeric[row, col]:
            bad_value[row] = "non-numeric"
        elif np.isnan(value):
            bad_value[row] = "null"
        else:
            bad_value[row] = f"{value:g}"
    return bad_pixel, bad_value


def image_statistics(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image mean and standard deviation of intensity (0-255) and the fraction of pixels
    at 0 or 255; missing or non-numeric pixels are left out."""
    n, p = matrix.shape
    if p == 0:
        return {name: np.full(n, np.nan) for name in IMAGE_STATISTICS}
    if matrix.dtype.kind == "f":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-missing rows give NaN, as they should
            mean = np.nanmean(matrix, axis=1)
            std = np.nanstd(matrix, axis=1)
            saturated = np.nanmean(np.where(np.isnan(matrix), np.nan, (matrix <= PIXEL_MIN) | (matrix >= PIXEL_MAX)), axis=1)
    else:
        values = matrix.astype(np.float32, copy=False)
        mean = values.mean(axis=1, dtype=np.float64)
        std = values.std(axis=1, dtype=np.float64)
        saturated = ((matrix <= PIXEL_MIN) | (matrix >= PIXEL_MAX)).mean(axis=1)
    return {"mean_intensity": mean, "std_intensity": std, "saturated_fraction": saturated}


def empty_profile() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in PROFILE_COLUMNS})
