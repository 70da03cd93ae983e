"""What the checks decide about an incoming batch: which rows are quarantined and why (one row
per problem, every offending pixel named), whether the dataset's policy rejects the batch, and
the verdict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from keel.core.config import DatasetConfig
from keel.data.pixel_rule import PIXEL_CHECKS, pixel_problems
from keel.data.pixel_stream import SKIPPED_TEXT
from keel.data.profile import ParsedTable
from keel.validation.checks import Failure, failures_of
from keel.validation.report import ACCEPTED, ACCEPTED_WITH_QUARANTINE, ACCEPTED_WITH_WARNINGS, REJECTED

QUARANTINE_COLUMNS = ["row", "line", "id", "column", "value", "expectation", "rule"]


@dataclass
class PixelCheck:
    """A failed pixel check of a table whose rows form images: every offending pixel of its rows
    (`positions`) is named from the rows' own pixels, which the report's second pass reads again
    (keel.validation.report_files); `part`: where its problems go in QuarantinePlan.parts."""

    part: int
    check: str
    expectation: str
    rule: str
    positions: np.ndarray


@dataclass
class QuarantinePlan:
    """One list of problems per failed quarantine expectation, in the suites' order (a pixel
    check's filled in by `pixel_checks`), and the lines that could not be parsed."""

    parts: list[list[tuple]]
    pixel_checks: list[PixelCheck]
    skipped: list[dict]

    def frame(self) -> pd.DataFrame:
        """One row per problem (QUARANTINE_COLUMNS), in file order."""
        records = [record for part in self.parts for record in part]
        for item in self.skipped:
            records.append((None, item.get("line"), "", "", item["text"][:SKIPPED_TEXT], "csv_line_has_header_fields",
                            f"every line needs {item['expected']} fields; this one has {item['fields']}"))
        frame = pd.DataFrame.from_records(records, columns=QUARANTINE_COLUMNS)
        frame = frame.sort_values(["line", "column"], kind="stable").reset_index(drop=True)
        frame["row"] = frame["row"].astype("Int64")
        frame["line"] = frame["line"].astype("Int64")
        return frame


@dataclass
class Judgement:
    """The checks' decision on one batch."""

    failures: list[Failure]
    quarantine: pd.DataFrame | None  # one row per problem (QUARANTINE_COLUMNS), unparsed lines included
    quarantined: np.ndarray  # positions of the quarantined rows
    clean: np.ndarray  # positions of the rows that passed (none when the columns are wrong)
    reasons: list[str]  # why the batch as a whole is rejected (empty: accepted)
    problems: int  # failed expectations and unparsed lines
    verdict: str
    plan: QuarantinePlan | None = None  # pixel tables: the problems, until the report names every pixel


def judge(run, batch, profile: pd.DataFrame, classes: pd.DataFrame | None, config: DatasetConfig,
          schema_ok: bool) -> Judgement:
    """The decision on a pixel-row batch (its header, unparsed lines `skipped`, and whether its
    rows form images) from its suites' results (`run`); `quarantine` is left to the report,
    which reads the pixels each pixel check names (`plan`)."""
    failures = failures_of(run, batch.header, classes)
    plan, quarantined = quarantine_plan(run, batch, profile)
    judged = decide(failures, None, quarantined, len(profile), len(batch.skipped), config, schema_ok)
    judged.plan = plan
    return judged


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


def quarantine_plan(run, batch, profile: pd.DataFrame) -> tuple[QuarantinePlan, np.ndarray]:
    """The problems of every row that failed a row-level expectation (a pixel check's left to
    the rows' pixels when `batch.images`), and those rows' positions."""
    parts: list[list[tuple]] = []
    checks: list[PixelCheck] = []
    bad_rows: set[int] = set()
    rows = profile["row"].to_numpy()
    for result in run.results.get("rows", []):
        meta = result.expectation_config.meta or {}
        if result.success or meta.get("on_failure") != "quarantine":
            continue
        column = result.expectation_config.kwargs.get("column")
        expectation = result.expectation_config.type
        rule = meta.get("rule", expectation)
        failing = [int(item["row"]) for item in (result.result or {}).get("unexpected_index_list") or []]
        positions = np.searchsorted(rows, np.asarray(failing, dtype=np.int64))
        bad_rows.update(positions.tolist())
        parts.append([])
        if column in PIXEL_CHECKS and batch.images:
            checks.append(PixelCheck(len(parts) - 1, column, expectation, rule, np.sort(positions)))
            continue
        for i in positions:
            value = profile[column].iloc[i]
            parts[-1].append((int(rows[i]), int(profile["line"].iloc[i]), profile["id"].iloc[i], column,
                              "" if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value)),
                              expectation, rule))
    return QuarantinePlan(parts, checks, batch.skipped), np.array(sorted(bad_rows), dtype=int)


def pixel_problems_of(parsed: ParsedTable, positions: np.ndarray, check: str, config: DatasetConfig,
                      expectation: str, rule: str) -> list[tuple]:
    """Every offending pixel of the rows at `positions` of `parsed` (a chunk of the batch, or
    all of it) for one pixel check (not just the first)."""
    profile = parsed.profile
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
