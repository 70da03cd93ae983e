"""Great Expectations expectations as plain dicts: what each modality's `expectations` role
returns, and what keel.validation.suite adds when it infers a suite from a reference.

Every expectation carries ``meta.rule`` (what it says in words), ``meta.on_failure`` (what a
failure does to an incoming batch: ``quarantine`` its rows, ``reject`` the batch, or count
as ``missing_class``/``class_share``/``drift``, which the dataset's policy turns into a
rejection) and optionally ``meta.needs`` (``labels``, ``ids``, ``anomaly_score``, ``training``:
the expectation is skipped when the batch lacks it).
"""

from __future__ import annotations

# A class must be present when a batch of this size should hold at least this many of it.
MIN_EXPECTED_ROWS = 5


def expectation(kind: str, rule: str, on_failure: str, needs: str | None = None, **kwargs) -> dict:
    """One expectation of type `kind` (a GX expectation name) with its arguments `kwargs`."""
    meta = {"rule": rule, "on_failure": on_failure}
    if needs:
        meta["needs"] = needs
    return {"type": kind, "kwargs": kwargs, "meta": meta}


def class_expectations() -> list[dict]:
    """The checks of the classes table (one row per class), the same for every modality."""
    return [
        expectation("expect_column_values_to_be_between",
                    f"every class must be present (each class expected at least {MIN_EXPECTED_ROWS} times in a batch this size)",
                    "missing_class", needs="labels", column="rows", min_value=1,
                    row_condition={"type": "comparison", "column": {"name": "expected_rows"}, "operator": ">=",
                                   "parameter": MIN_EXPECTED_ROWS}),
        expectation("expect_column_pair_values_a_to_be_greater_than_b",
                    "each class's share must be at least its lower bound (min_share)", "class_share", needs="labels",
                    column_A="share", column_B="min_share", or_equal=True),
        expectation("expect_column_pair_values_a_to_be_greater_than_b",
                    "each class's share must be at most its upper bound (max_share)", "class_share", needs="labels",
                    column_A="max_share", column_B="share", or_equal=True),
    ]
