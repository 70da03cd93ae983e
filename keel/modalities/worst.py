"""The worst-classified rows of an evaluation (`Modality.worst_classified`): the rows whose true
class got the lowest probability, shown as a PNG grid of images or a table of texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from keel.core.atomic import atomic_path
from keel.core.plots import worst_classified_grid
from keel.data.batches import load_split
from keel.data.versions import DatasetVersion, class_indices

TEXT_CHARACTERS = 200  # a text in the table is cut to this many characters


def worst_rows(targets: np.ndarray, probabilities: np.ndarray, n: int) -> np.ndarray:
    """Positions of the `n` rows whose true class got the lowest probability, worst first."""
    return np.argsort(probabilities[np.arange(len(targets)), targets], kind="stable")[:n]


def image_grid(version: DatasetVersion, indices: np.ndarray, probabilities: np.ndarray, class_names: list[str],
               path: Path, n: int = 12) -> list[Path]:
    """`path`.png: a grid of the `n` stored images (rows `indices`, sorted) worst classified."""
    split = load_split(version, indices, torch.device("cpu"))
    targets = split.targets.numpy()
    worst = worst_rows(targets, probabilities, n)
    images = split.images[torch.from_numpy(worst)].permute(0, 2, 3, 1).numpy()
    names = np.asarray(class_names)
    return [worst_classified_grid(images, list(names[targets[worst]]), list(names[probabilities[worst].argmax(1)]),
                                  list(probabilities[worst].max(1)), Path(path).with_suffix(".png"))]


def text_table(version: DatasetVersion, indices: np.ndarray, probabilities: np.ndarray, class_names: list[str],
               path: Path, n: int = 20) -> list[Path]:
    """`path`.md and `path`.csv: the `n` texts (rows `indices`, sorted) worst classified, with
    their true and predicted classes and the confidence of the prediction, each text cut to
    TEXT_CHARACTERS characters."""
    rows = np.sort(indices)
    targets = class_indices(version.labels()[rows], version.meta["labels"])
    worst = worst_rows(targets, probabilities, n)
    texts = version.texts()
    names = np.asarray(class_names)
    table = pd.DataFrame({
        "true": names[targets[worst]], "predicted": names[probabilities[worst].argmax(1)],
        "confidence": probabilities[worst].max(1).round(4), "text": [_cut(texts[int(rows[w])]) for w in worst]})
    markdown, csv = Path(path).with_suffix(".md"), Path(path).with_suffix(".csv")
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(markdown) as tmp:
        tmp.write_text(worst_markdown(table))
    return [markdown, csv]


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_CHARACTERS else text[:TEXT_CHARACTERS - 1] + "…"


def worst_markdown(table: pd.DataFrame) -> str:
    """The worst-classified texts as a markdown table (one line per text: newlines and pipes
    in a text are shown as spaces and escaped pipes)."""
    lines = ["| true | predicted | confidence | text |", "|---|---|---:|---|"]
    for row in table.itertuples(index=False):
        text = " ".join(str(row.text).split()).replace("|", "\\|")
        lines.append(f"| {row.true} | {row.predicted} | {row.confidence:.1%} | {text} |")
    return "\n".join(lines) + "\n"
