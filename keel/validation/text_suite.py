"""Expectation suites for batches of texts: the same layout as keel.validation.suite's (schema,
rows, classes, drift; every expectation with meta.rule and meta.on_failure), over the tables
keel.validation.text_batch builds.

- ``schema``: one row per column of the file (name, position, role: text, label, id, group or
  ignored -- a text file may carry other columns, which are not read);
- ``rows``: one row per record: keel.data.text_rule's checks (one bool column each), the text's
  length in the reference version's tokens, the label and whether it is a class, the id, and
  whether the text copies (exactly, after lowercasing and collapsing whitespace) or nearly
  copies (word n-gram cosine at the dataset's threshold) a text of the training data;
- ``classes`` and ``drift`` as for pixel rows; text drift adds the out-of-vocabulary rate and
  an embedding shift test (keel.validation.text_drift).

`text_suite` builds the structural suite (from the config alone) or, with what
keel.validation.text_profiling learned from the reference, the inferred one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from keel.core.config import DatasetConfig
from keel.data.text_rule import TEXT_CHECKS
from keel.modalities.expectations import class_expectations, expectation
from keel.validation.suite import SUITE_FORMAT

# The profile's leak columns -> the rule in words (the threshold is the dataset's).
COPY = "copy_of_training_text"
NEAR_COPY = "near_copy_of_training_text"
ROLES = ("text", "label", "id", "group")


def text_schema_table(columns: list[str], config: DatasetConfig, id_column: str | None) -> pd.DataFrame:
    """One row per column of the file: name, position and role (text, label, id, group or ignored)."""
    roles = {config.text_column: "text", config.label_column: "label"}
    if id_column:
        roles[id_column] = "id"
    if config.group_column:
        roles[config.group_column] = "group"
    return pd.DataFrame({"column": pd.Series(columns, dtype=object), "position": np.arange(1, len(columns) + 1),
                         "role": pd.Series([roles.get(c, "ignored") for c in columns], dtype=object)})


def _schema_expectations(config: DatasetConfig) -> list[dict]:
    return [
        expectation("expect_column_distinct_values_to_contain_set", f"the text column {config.text_column} must be present",
                    "reject", column="column", value_set=[config.text_column]),
        expectation("expect_column_values_to_be_unique", "column names must be unique", "reject", column="column"),
    ]


def _row_expectations(config: DatasetConfig, tokens: tuple[int, int] | None, widen: float) -> list[dict]:
    policy, names = config.validation, ", ".join(config.class_names)
    threshold = config.evaluation_split.threshold
    checks = [expectation("expect_column_values_to_be_in_set", rule, "quarantine", column=check, value_set=[False])
              for check, rule in TEXT_CHECKS.items()]
    if tokens is not None:
        checks.append(expectation(
            "expect_column_values_to_be_between",
            f"the text must be {tokens[0]}-{tokens[1]} tokens long (the reference's range, widened {widen:.0%})",
            "quarantine", column="tokens", min_value=tokens[0], max_value=tokens[1]))
    return [
        expectation("expect_table_row_count_to_be_between", f"the batch must hold {policy.min_rows}-{policy.max_rows} rows",
                    "reject", min_value=policy.min_rows, max_value=policy.max_rows),
        expectation("expect_column_values_to_not_be_null", "every row needs a label", "quarantine", needs="labels", column="label"),
        expectation("expect_column_values_to_be_in_set", f"labels must be one of the classes ({names})", "quarantine",
                    needs="labels", column="label_known", value_set=[True]),
        *checks,
        expectation("expect_column_values_to_be_in_set",
                    "the text must not be a copy of a training text (after lowercasing and collapsing whitespace): "
                    "it would leak into evaluation", "quarantine", column=COPY, value_set=[False]),
        expectation("expect_column_values_to_be_in_set",
                    f"the text must not be a near-copy of a training text (word n-gram cosine >= {threshold:g})",
                    "quarantine", column=NEAR_COPY, value_set=[False]),
        expectation("expect_column_values_to_be_unique", "ids must be unique within the batch", "quarantine", needs="ids", column="id"),
    ]


def _drift_expectations() -> list[dict]:
    return [expectation("expect_column_values_to_be_in_set",
                        "labels, token lengths, vocabulary and encoder embeddings must not drift from the reference "
                        "past the thresholds", "drift", column="drifted", value_set=[False])]


def text_suite(config: DatasetConfig, learned: dict | None = None, widen: float = 0.1) -> dict:
    """The suite document of a text dataset: structural (classes near a uniform share) without
    `learned`; else with its token bounds, class shares, drift references and reference file
    (keys `tokens`, `classes`, `drift`, `text_reference`, `reference`)."""
    learned = learned or {}
    k = len(config.labels)
    doc = {
        "format": SUITE_FORMAT, "dataset": config.name, "modality": "text", "inferred": bool(learned),
        "suites": {"schema": _schema_expectations(config), "rows": _row_expectations(config, learned.get("tokens"), widen),
                   "classes": class_expectations()},
        "classes": learned.get("classes") or {
            "reference_shares": {str(v): 1.0 / k for v in config.labels}, "min_ratio": config.validation.min_class_share,
            "max_ratio": config.validation.max_class_share, "standard_errors": 0.0},
    }
    if learned:
        doc["suites"]["drift"] = _drift_expectations()
        doc.update({key: learned[key] for key in ("reference", "drift", "text_reference")})
    return doc
