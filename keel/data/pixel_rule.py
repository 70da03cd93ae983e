"""What a valid pixel is, said once: a whole number from 0 to 255 (it fits a uint8).

Ingest profiles every row against this rule (keel.data.profile), the structural expectation
suite checks the profile's counts and bounds with the words below, incoming validation names
each offending pixel by the same masks, and a version stores images only when no pixel
breaks it. Nothing else defines the bounds or the words.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PIXEL_MIN, PIXEL_MAX = 0, 255
VALID_PIXEL = f"a pixel is a whole number from {PIXEL_MIN} to {PIXEL_MAX}"

# Each way a pixel can break the rule, named by the profile column that counts it (pixel_min
# and pixel_max hold each row's extremes), with the words an expectation on it says.
PIXEL_CHECKS = {
    "pixel_nulls": "pixels must not be empty",
    "pixel_non_numeric": "pixels must be numbers",
    "pixel_non_integer": "pixels must be whole numbers",
    "pixel_min": f"pixels must be at least {PIXEL_MIN}",
    "pixel_max": f"pixels must be at most {PIXEL_MAX}",
}


def pixel_problems(matrix: np.ndarray, non_numeric: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """For an N x P pixel matrix (integers, or floats with NaN where a pixel is missing or
    was text; `non_numeric` marks the text), a mask per check of PIXEL_CHECKS: which pixels
    break the rule that way."""
    if matrix.dtype.kind == "f":
        missing = np.isnan(matrix)
        text = non_numeric if non_numeric is not None else np.zeros_like(missing)
        fractional = ~missing & (matrix != np.round(matrix))
    else:  # integers: never missing, text or fractional
        missing = text = fractional = np.zeros(matrix.shape, dtype=bool)
    return {
        "pixel_nulls": missing & ~text,
        "pixel_non_numeric": text,
        "pixel_non_integer": fractional,
        "pixel_min": matrix < PIXEL_MIN,  # NaN compares False
        "pixel_max": matrix > PIXEL_MAX,
    }


def invalid_pixels(matrix: np.ndarray, non_numeric: np.ndarray | None = None) -> np.ndarray:
    """Which pixels of the matrix break the rule, whichever way."""
    if matrix.dtype.kind != "f":  # the common case, kept cheap: only the bounds can fail
        return (matrix < PIXEL_MIN) | (matrix > PIXEL_MAX)
    problems = pixel_problems(matrix, non_numeric)
    return problems["pixel_nulls"] | problems["pixel_non_numeric"] | problems["pixel_non_integer"] \
        | problems["pixel_min"] | problems["pixel_max"]


def invalid_rows(profile: pd.DataFrame) -> pd.Series:
    """Which rows of a profile (keel.data.profile) hold a pixel that breaks the rule."""
    return (profile["pixel_nulls"] > 0) | (profile["pixel_non_numeric"] > 0) | (profile["pixel_non_integer"] > 0) \
        | (profile["pixel_min"] < PIXEL_MIN) | (profile["pixel_max"] > PIXEL_MAX)
