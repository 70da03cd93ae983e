"""What the checks decide about an incoming batch: which rows are quarantined and why (one row
per problem, every offending pixel named), whether the dataset's policy rejects the batch, and
the verdict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from keel.core.config import DatasetConfig
from keel.data.pixel_rule import PIXEL_CHECKS, pixel_problems
from keel.data.profile import ParsedTable
from keel.validation.checks import Failure, failures_of
from keel.validation.report import ACCEPTED, ACCEPTED_WITH_QUARANTINE, ACCEPTED_WITH_WARNINGS, REJECTED

QUARANTINE_COLUMNS = ["row", "line", "id", "column", "value", "expectation", "rule"]


@dataclass
class Judgement:
    """The checks' decision on one batch."""

    failures: list[Failure]
    quarantine: pd.DataFrame  # one row per problem (QUARANTINE_COLUMNS), unparsed lines included
    quarantined: np.ndarray  # positions of the quarantined rows
    clean: np.ndarray  # positions of the rows that passed (none when the columns are wrong)
    reasons: list[str]  # why the batch as a whole is rejected (empty: accepted)
    problems: int  # failed expectations and unparsed lines
    verdict: str


def judge(run, parsed: ParsedTable, profile: pd.DataFrame, classes: pd.DataFrame | None, config: DatasetConfig,
          schema_ok: bool) -> Judgement:
    """The decision on a batch from its suites' results (`run`)."""
    failures = failures_of(run, parsed.header, classes)
    frame, quarantined = quarantine(run, parsed, profile, failures, config)
    return decide(failures, frame, quarantined, len(profile), len(parsed.skipped), config, schema_ok)


def decide(failures: list[Failure], frame: pd.DataFrame, quarantined: np.ndarray, rows: int, skipped: int,
           config: DatasetConfig, schema_ok: bool) -> Judgement:
    """The decision on a batch of `rows` read rows (and `skipped` unreadable lines) from its
    failed expectations and quarantine (any modality's)."""
    reasons = rejections(failures, len(quarantined) + skipped, rows + skipped, config, schema_ok)
    clean = np.setdiff1d(np.arange(rows), quarantined) if schema_ok else np.array([], dtype=int)
    problems = len(failures) + skipped
    verdict = REJECTED if reasons else (
        ACCEPTED_WITH_QUARANTINE if len(quarantined) or skipped else
        ACCEPTED_WITH_WARNINGS if problems else ACCEPTED)
    return Judgement(failures, frame, quarantined, clean, reasons, problems, verdict)


def rejections(failures: list[Failure], quarantined: int, rows: int, config: DatasetConfig, schema_ok: bool) -> list[str]:
    """Why the batch as a whole is rejected, by the dataset's policy (empty: accepted)."""
    policy = config.validation
    reasons = [f.sentence() for f in failures if f.on_failure == "reject"]
    if not schema_ok and not reasons:
        reasons.append("the columns do not match the dataset")
    if rows and quarantined / rows > policy.max_quarantined_fraction:
        reasons.append(f"{quarantined} of {rows} rows ({quarantined / rows:.1%}) were quarantined, more than the "
                       f"policy's {policy.max_quarantined_fraction:.1%} (validation.max_quarantined_fraction)")
    switches = {"missing_class": policy.reject_on_missing_class, "class_share": policy.reject_on_class_share,
                "drift": policy.reject_on_drift}
    for failure in failures:
        if switches.get(failure.on_failure):
            detail = failure.observed or "; ".join(", ".join(f"{k}={v}" for k, v in e.items()) for e in failure.examples[:3])
            reasons.append(f"{failure.rule} ({detail}; policy reject_on_{failure.on_failure})")
    return reasons


def quarantine(run, parsed: ParsedTable, profile: pd.DataFrame, failures: list[Failure],
                config: DatasetConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per problem of every row that failed a row-level expectation, and those rows."""
    records: list[tuple] = []
    bad_rows: set[int] = set()
    row_position = {int(r): i for i, r in enumerate(profile["row"])} if len(profile) else {}
    for result in run.results.get("rows", []):
        meta = result.expectation_config.meta or {}
        if result.success or meta.get("on_failure") != "quarantine":
            continue
        kwargs = result.expectation_config.kwargs
        column = kwargs.get("column")
        expectation = result.expectation_config.type
        rule = meta.get("rule", expectation)
        positions = [row_position[int(item["row"])] for item in (result.result or {}).get("unexpected_index_list") or []]
        bad_rows.update(positions)
        if column in PIXEL_CHECKS and parsed.pixels is not None:
            records += _pixel_problems(parsed, profile, positions, column, config, expectation, rule)
            continue
        for i in positions:
            value = profile[column].iloc[i]
            records.append((int(profile["row"].iloc[i]), int(profile["line"].iloc[i]), profile["id"].iloc[i], column,
                            "" if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value)), expectation, rule))
    for item in parsed.skipped:
        records.append((None, item.get("line"), "", "", item["text"][:60], "csv_line_has_header_fields",
                        f"every line needs {item['expected']} fields; this one has {item['fields']}"))
    frame = pd.DataFrame.from_records(records, columns=QUARANTINE_COLUMNS)
    frame = frame.sort_values(["line", "column"], kind="stable").reset_index(drop=True)
    frame["row"] = frame["row"].astype("Int64")
    frame["line"] = frame["line"].astype("Int64")
    return frame, np.array(sorted(bad_rows), dtype=int)


def _pixel_problems(parsed: ParsedTable, profile, positions: list[int], check: str, config: DatasetConfig,
                    expectation: str, rule: str) -> list[tuple]:
    """Every offending pixel of the given rows for one pixel check (not just the first)."""
    matrix = parsed.pixels[positions]
    names = config.pixel_columns
    masks = pixel_problems(matrix, parsed.non_numeric[positions] if parsed.non_numeric is not None else None)
    raw = parsed.table
    out = []
    for k, col in zip(*np.nonzero(masks[check])):
        i = positions[k]
        if check in ("pixel_nulls", "pixel_non_numeric"):
            value = raw.column(names[col])[i].as_py() if raw is not None else None
            value = "" if value is None else str(value)
        else:
            value = f"{matrix[k, col]:g}"
        out.append((int(profile["row"].iloc[i]), int(profile["line"].iloc[i]), profile["id"].iloc[i], names[col],
                    value, expectation, rule))
    return out
