"""Real Sign-MNIST rows with one planted fault each: (name, how to write it, expected reason)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def pixel_300(rows: pd.DataFrame, path: Path) -> None:
    rows = rows.copy()
    rows.loc[7, "pixel300"] = 300
    rows.to_csv(path, index=False)


def non_numeric_pixel(rows: pd.DataFrame, path: Path) -> None:
    rows = rows.astype(object)
    rows.loc[3, "pixel5"] = "abc"
    rows.to_csv(path, index=False)


def missing_column(rows: pd.DataFrame, path: Path) -> None:
    rows.drop(columns=["pixel784"]).to_csv(path, index=False)


def unknown_label(rows: pd.DataFrame, path: Path) -> None:
    rows = rows.copy()
    rows.loc[10, "label"] = 9  # J: needs motion, not a Sign-MNIST class
    rows.to_csv(path, index=False)


def empty_file(rows: pd.DataFrame, path: Path) -> None:
    path.write_bytes(b"")


def class_missing(rows: pd.DataFrame, path: Path) -> None:
    rows[rows["label"] != 3].to_csv(path, index=False)


# name -> (writer, expected rule text in the report, expected example text or None)
CASES = {
    "pixel-300": (pixel_300, "pixels must be at most 255", "line=9, label="),
    "non-numeric-pixel": (non_numeric_pixel, "pixels must be numbers", "bad_pixel=pixel5, bad_value=non-numeric"),
    "missing-column": (missing_column, "all 784 pixel columns pixel1..pixel784 must be present", "missing pixel784"),
    "unknown-label": (unknown_label, "labels must be one of the configured classes", "label=9, row=11, line=12"),
    "empty-file": (empty_file, "the batch must hold 50-100000 rows", "no columns at all"),
    "class-missing": (class_missing, "every class must be present", "missing 3 (D)"),
}
