"""Incoming Sign-MNIST batches built from the shipped data, each with one planted fault.

The clean rows come from the half of the reference's group-aware evaluation split that the
suite's autoencoder never trained on and its threshold was not fitted on (rows of other
near-duplicate groups: new photos), so a clean batch tests false alarms honestly.
"""

from __future__ import annotations

import gzip
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd


REPO = Path(__file__).resolve().parents[1]
SIGN_MNIST_CSV = REPO / "data" / "sign-mnist" / "sign_mnist_train.csv.gz"
MNIST_IMAGES = REPO / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"


@lru_cache(maxsize=1)
def clean_batch() -> pd.DataFrame:
    """480 unseen reference rows: 20 of each class, shuffled."""
    from keel.core.config import load_dataset_config
    from keel.modalities import ingest
    from keel.validation.profiling import held_out_halves

    frame = pd.read_csv(SIGN_MNIST_CSV)
    with tempfile.TemporaryDirectory() as folder:
        version = ingest(load_dataset_config(REPO / "conf" / "datasets" / "sign-mnist.yaml"), root=Path(folder)).version
        _, check = held_out_halves(version, version.indices("evaluation"), seed=0)
    unseen = frame.iloc[check]
    parts = [g.head(20) for _, g in unseen.groupby("label")]
    return pd.concat(parts).sample(frac=1.0, random_state=0).reset_index(drop=True)


def pixels(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("pixel")]


def mnist_digits(n: int) -> np.ndarray:
    with gzip.open(MNIST_IMAGES) as handle:
        return np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 784)[:n]


def _write(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False)


def with_cell(row: int, column: str, value):
    def write(frame, path):
        frame = frame.astype(object)
        frame.loc[row, column] = value
        _write(frame, path)
    return write


def wrong_header(frame, path):
    _write(frame.rename(columns={c: c.replace("pixel", "px") for c in pixels(frame)}), path)


def extra_column(frame, path):
    frame = frame.copy()
    frame["source_camera"] = "cam-1"
    _write(frame, path)


def duplicate_ids(frame, path):
    frame = frame.copy()
    frame.insert(0, "id", [f"img-{i:04d}" for i in range(len(frame))])
    frame.loc[40, "id"] = "img-0012"
    _write(frame, path)


def class_missing(frame, path):
    _write(frame[frame["label"] != 3], path)


def shifted_mix(frame, path):
    """Half the classes keep 20 rows each, the other half 2: the label mix moved, no class vanished."""
    labels = sorted(frame["label"].unique())
    keep = frame.groupby("label").cumcount() < np.where(frame["label"].isin(labels[::2]), 20, 2)
    _write(frame[keep], path)


def replace_rows(rows: list[int], make):
    def write(frame, path):
        frame = frame.copy()
        columns = pixels(frame)
        frame.loc[rows, columns] = make(frame.loc[rows, columns].to_numpy()).astype(np.int64)
        _write(frame, path)
    return write


def noisy(values: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(values + rng.normal(0, 0.3 * 255, values.shape), 0, 255).round()


def mnist_mixed_in(frame, path):
    frame = frame.copy()
    columns = pixels(frame)
    frame.loc[range(0, 400, 20), columns] = mnist_digits(20).astype(np.int64)
    _write(frame, path)


def ragged_line(frame, path):
    _write(frame, path)
    lines = path.read_text().splitlines()
    lines[6] = lines[6].rsplit(",", 1)[0]  # line 7 loses its last pixel
    path.write_text("\n".join(lines) + "\n")


def empty_file(frame, path):
    path.write_bytes(b"")


PLANTED_ROWS = [5, 55, 105, 155, 205, 255, 305, 355, 405, 455]

# name -> (writer, rule text that must report it, column named in the quarantine file or None,
#          number of quarantined rows, verdict)
CASES = {
    "wrong-header": (wrong_header, "all 784 pixel columns pixel1..pixel784 must be present", None, 0, "rejected"),
    "extra-column": (extra_column, "only label, an id column and pixel1..pixel784 may appear", None, 0, "rejected"),
    "pixel-300": (with_cell(7, "pixel300", 300), "pixels must be at most 255", "pixel300", 1, "accepted with quarantine"),
    "pixel-minus-1": (with_cell(8, "pixel1", -1), "pixels must be at least 0", "pixel1", 1, "accepted with quarantine"),
    "pixel-nan": (with_cell(9, "pixel2", None), "pixels must not be empty", "pixel2", 1, "accepted with quarantine"),
    "pixel-text": (with_cell(3, "pixel5", "abc"), "pixels must be numbers", "pixel5", 1, "accepted with quarantine"),
    "unknown-label": (with_cell(10, "label", 9), "labels must be one of the configured classes", "label", 1, "accepted with quarantine"),
    "duplicate-ids": (duplicate_ids, "ids must be unique within the batch", "id", 2, "accepted with quarantine"),
    "class-missing": (class_missing, "every class must be present", None, 0, "rejected"),
    "shifted-label-mix": (shifted_mix, "must not drift from the reference", None, 0, "rejected"),
    "mnist-digits": (mnist_mixed_in, "anomaly score", "anomaly_score", 20, "accepted with quarantine"),
    "inverted": (replace_rows(PLANTED_ROWS, lambda v: 255 - v), "anomaly score", "anomaly_score", 10, "accepted with quarantine"),
    "heavy-noise": (replace_rows(PLANTED_ROWS, noisy), "anomaly score", "anomaly_score", 10, "accepted with quarantine"),
    "blank-image": (replace_rows([33], lambda v: np.full_like(v, 128)), "intensity standard deviation must be within",
                    "std_intensity", 1, "accepted with quarantine"),
    "ragged-line": (ragged_line, "every line needs 785 fields", "", 1, "accepted with quarantine"),
    "empty-file": (empty_file, "observed no columns at all (empty file?)", None, 0, "rejected"),
}

# Checks that may also (rightly) fire for a case: dark, mostly black digits break the
# reference's intensity bounds too.
ALSO_CAUGHT_BY = {"mnist-digits": {"mean_intensity", "std_intensity", "saturated_fraction"}}
