"""What preprocessing a scoring input gives (`Modality.preprocess`): the model's input for the
rows that can be scored (uint8 images or int64 token ids), and one problem per reason for each
row that cannot."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

PROBLEM_COLUMNS = ["position", "column", "value", "reason"]


@dataclass
class Prepared:
    """A scoring input made ready for a model; a bad row is refused here, never raised."""

    inputs: torch.Tensor  # the rows that can be scored, in input order: uint8 N x C x H x W or int64 token ids N x L
    good: np.ndarray  # one bool per input row: whether it is among `inputs`
    problems: pd.DataFrame  # PROBLEM_COLUMNS: position (0-based) of a refused row, column, value, reason
    notes: list[str] | None = None  # per scored row, what reading changed (a photo's EXIF turn...); None: nothing can

    def first_problem(self) -> str:
        """The first problem as a sentence: what a caller that refuses the whole input raises."""
        first = self.problems.iloc[0]
        where = f" column {first['column']}" if first["column"] else ""
        held = f" holds {first['value']}" if first["value"] != "" else ""
        return f"row {first['position']}{where}{held}: {first['reason']}"


def prepared(pixels: np.ndarray, good: np.ndarray, problems: list[tuple], notes: list[str] | None = None) -> Prepared:
    """A Prepared from the scored rows' uint8 N x H x W x C pixels and the refused rows' problems
    (position, column, value, reason)."""
    images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).contiguous()
    return Prepared(images, good, pd.DataFrame.from_records(problems, columns=PROBLEM_COLUMNS), notes)


def refused(n: int, column: str, reason: str, image: dict) -> Prepared:
    """Every one of `n` rows refused for one reason (the input lacks what the model takes)."""
    empty = np.zeros((0, image["height"], image["width"], image["channels"]), dtype=np.uint8)
    return prepared(empty, np.zeros(n, dtype=bool), [(i, column, "", reason) for i in range(n)])
