"""A scoring input's texts as a text model takes them (the text modality's `preprocess`): token
ids of the texts that can be scored, each other row refused with the one reason
keel.data.text_rule gives, and the texts longer than the model's max_length truncated and noted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from ftfy import fix_text
import pyarrow as pa
import torch

from keel.data.text_rule import SCORING_CHECKS, printable, text_problems, usable
from keel.data.tokenizer import encode, load_tokenizer, pad_batch
from keel.modalities.prepared import PROBLEM_COLUMNS, Prepared

# How scoring names each way a text breaks keel.data.text_rule (in its errors file's `reason`).
SCORING_REASONS = {
    "text_missing": "missing text",
    "text_non_string": "not a string (a number, list or object is not a text)",
    "text_empty": "empty text (nothing but whitespace)",
    "text_bad_utf8": "not valid UTF-8 (the file holds bytes that are not); re-export the file as UTF-8",
    "text_control": "control characters (other than tab and newline)",
}


def text_column(model_config: dict) -> str:
    """The column a text model reads its texts from."""
    return model_config.get("text_column") or "text"


def prepare_texts(rows: pd.DataFrame | pa.Table, model_config: dict) -> Prepared:
    """Rows of a scoring input (a DataFrame or an Arrow table) as int64 token ids [N, longest]
    of the usable texts, through the tokenizer at model_config["tokenizer_file"] (set by whoever
    loaded the model) and cut to model_config["max_length"]; a longer text is truncated and
    noted ("truncated: N tokens > max_length M"), never refused; mojibake is repaired (ftfy) and
    noted. Every row is refused when the text column is missing."""
    column = text_column(model_config)
    present = rows.column_names if isinstance(rows, pa.Table) else list(rows.columns)
    if column not in present:
        reason = f"no `{column}` column: send one text per row in a column named {column}"
        return _prepared([], np.zeros(len(rows), dtype=bool), [(i, column, "", reason) for i in range(len(rows))], [])
    values = rows.column(column).to_pylist() if isinstance(rows, pa.Table) else rows[column].tolist()
    checks = text_problems(values)
    good = usable(checks, SCORING_CHECKS)
    bad = np.flatnonzero(~good)
    broken = checks[list(SCORING_CHECKS)].to_numpy()[bad].argmax(axis=1)  # each row's first broken check
    problems = [(int(i), column, printable(values[i]), SCORING_REASONS[SCORING_CHECKS[c]]) for i, c in zip(bad, broken)]
    scored = np.flatnonzero(good)
    repaired = checks["text_mojibake"].to_numpy()[scored]
    texts = [fix_text(values[i]) if fix else values[i] for i, fix in zip(scored, repaired)]
    if not texts:
        return _prepared([], good, problems, [])
    if not model_config.get("tokenizer_file"):
        raise ValueError("a text model's config needs `tokenizer_file` (the path of its tokenizer artifact), set by "
                         "whoever loads the model")
    max_length = int(model_config["max_length"])
    ids, lengths = encode(load_tokenizer(model_config["tokenizer_file"]), texts, max_length)
    notes = ["; ".join(([f"truncated: {n} tokens > max_length {max_length}"] if n > max_length else [])
                       + (["repaired mojibake (ftfy)"] if fix else [])) for n, fix in zip(lengths, repaired)]
    return _prepared(ids, good, problems, notes)


def _prepared(ids: list[list[int]], good: np.ndarray, problems: list[tuple], notes: list[str]) -> Prepared:
    """A Prepared of the scored rows' token ids (padded with [PAD], id 0) and the refused rows' problems."""
    inputs = pad_batch(ids) if ids else torch.zeros((0, 0), dtype=torch.int64)
    return Prepared(inputs, good, pd.DataFrame.from_records(problems, columns=PROBLEM_COLUMNS), notes)
