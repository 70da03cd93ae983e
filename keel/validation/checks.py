"""Great Expectations validation of pixel tables.

Checking each of 784 pixel columns with its own expectation, or melting the table into one
21-million-row column, is slow on Sign-MNIST (docs/benchmarks.md). Instead, ingest reduces
every row to a profile (pixel count, min, max, and counts of null, non-numeric and
non-integer pixels, plus the first offending pixel), and GX checks every row of that
profile. The verdict is the same -- a row fails exactly when one of its pixels does -- and
each failing row still names its file, line, pixel column and value.

The tables and their suites are described in keel/validation/suite.py: ``schema`` (one row per
column), ``rows`` (the per-row profile), ``classes`` (one row per class) and, for incoming
batches, ``drift``. This module builds the tables and runs the suites; keel/validation/incoming.py
turns row-level failures into a quarantine.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from keel.core.atomic import atomic_path
from keel.core.config import DatasetConfig
from keel.data.splits import leakage_sentence
from keel.data.versions import DatasetVersion
from keel.modalities.expectations import MIN_EXPECTED_ROWS
from keel.validation.datadocs_offline import build_offline_site
from keel.validation.suite import leakage_expectations, load_suite, structural_suite

MAX_EXAMPLES = 5


@dataclass
class Failure:
    """One failed expectation, told in words and figures."""

    batch: str
    expectation: str
    column: str | None
    rule: str
    unexpected_count: int | None
    unexpected_percent: float | None
    on_failure: str = "reject"
    examples: list[dict] = field(default_factory=list)
    observed: str | None = None

    def sentence(self) -> str:
        where = f" in column '{self.column}'" if self.column else ""
        count = ""
        if self.unexpected_count is not None:
            count = f": {self.unexpected_count} rows fail ({self.unexpected_percent:.2f} %)"
        observed = f"; observed {self.observed}" if self.observed else ""
        return f"{self.rule}{where}{count}{observed}"


@dataclass
class ValidationReport:
    """The outcome of validating one dataset version."""

    dataset: str
    version: str
    rows: int
    success: bool
    expectations: int
    failures: list[Failure]
    seconds: float
    docs_index: str | None = None
    suite: str = ""
    # Failed expectations that do not stop training (a leaked split without stop_on_leak).
    warnings: list[Failure] = field(default_factory=list)
    # Which split the version's evaluation figures come from, and its leakage in words.
    split: str = ""
    leakage: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.success:
            passed = self.expectations - len(self.warnings)
            lines = [f"{self.dataset} {self.version}: {passed} of {self.expectations} expectations passed on {self.rows} rows"
                     + (f", {len(self.warnings)} warning(s)" if self.warnings else "")]
        else:
            lines = [f"{self.dataset} {self.version}: {len(self.failures)} of {self.expectations} expectations failed on {self.rows} rows"]
        for failure in self.failures + self.warnings:
            lines.append(f"- {'warning: ' if failure in self.warnings else ''}{failure.sentence()}")
            for example in failure.examples:
                lines.append("    e.g. " + ", ".join(f"{k}={v}" for k, v in example.items()))
        if self.split:
            lines.append(f"split: {self.split}")
        lines += [f"leakage: {sentence}" for sentence in self.leakage]
        if self.docs_index:
            lines.append(f"Data Docs: {self.docs_index}")
        return "\n".join(lines)

    def markdown(self) -> str:
        status = "passed" if self.success else "FAILED"
        out = [f"# Data validation {status}: {self.dataset} `{self.version}`", "",
               f"{self.rows} rows, {self.expectations} expectations, {self.seconds:.2f} s.", ""]
        if self.split:
            out += [f"Evaluation split: {self.split}.", ""]
        out += [f"- leakage: {sentence}" for sentence in self.leakage] + ([""] if self.leakage else [])
        if self.failures or self.warnings:
            out += ["| expectation | column | failing rows | examples |", "|---|---|---|---|"]
            for f in self.failures + self.warnings:
                examples = "<br>".join(", ".join(f"{k}={v}" for k, v in e.items()) for e in f.examples)
                count = "" if f.unexpected_count is None else f"{f.unexpected_count} ({f.unexpected_percent:.2f} %)"
                rule = f.rule + (f" (observed {f.observed})" if f.observed else "")
                out.append(f"| {rule} | {f.column or ''} | {count} | {examples} |")
        if self.docs_index:
            out += ["", f"Great Expectations Data Docs: `{self.docs_index}`"]
        return "\n".join(out)

    def to_dict(self) -> dict:
        return asdict(self)


# Columns that identify a failing row in each table's examples.
INDEX_COLUMNS = {
    "schema": ["column", "position"],
    "rows": ["row", "line", "id", "label", "bad_pixel", "bad_value", "file"],
    "classes": ["label", "class_name", "rows", "expected_rows"],
    "drift": ["check", "statistic", "value", "threshold", "p_value", "drivers"],
    "leakage": ["part", "rows", "near_copy_share", "nn_accuracy"],
}


def leakage_table(version: DatasetVersion) -> pd.DataFrame:
    """One row per held-out part (evaluation, test): its rows, the share with a near-copy in
    training, and the accuracy of a 1-nearest-neighbour lookup (the memorisation baseline)."""
    columns = INDEX_COLUMNS["leakage"]
    return pd.DataFrame([{"part": part, **{c: figures[c] for c in columns[1:]}} for part, figures in version.leakage.items()],
                        columns=columns)


def leakage_sentences(version: DatasetVersion, limit: float, over_only: bool = False) -> list[str]:
    """The leakage of each held-out part in words (only the parts over `limit` with `over_only`)."""
    return [leakage_sentence(part, figures, limit) for part, figures in version.leakage.items()
            if not over_only or figures["near_copy_share"] > limit]


def schema_table(header: list[str], config: DatasetConfig, id_column: str | None = None,
                 kinds: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per column of the input: name, position, role and (pixels) how its values read."""
    pixels = set(config.pixel_columns)
    kinds = kinds or {}

    def role(name: str) -> str:
        if name == config.label_column:
            return "label"
        if id_column and name == id_column:
            return "id"
        if config.group_column and name == config.group_column:
            return "group"
        return "pixel" if name in pixels else "unexpected"

    roles = [role(c) for c in header]
    return pd.DataFrame({
        "column": pd.Series(header, dtype=object), "position": np.arange(1, len(header) + 1),
        "role": pd.Series(roles, dtype=object),
        "pixel_kind": pd.Series([kinds.get(c, "integer") if r == "pixel" else None for c, r in zip(header, roles)], dtype=object),
    })


def class_table(labels: pd.Series, config: DatasetConfig, classes: dict) -> pd.DataFrame:
    """One row per configured class: rows, share, and the share's bounds for a batch of this
    size (the reference share times the suite's ratios, widened by its standard errors)."""
    counts = labels.dropna().astype(str).value_counts()
    n = int(len(labels))
    keys = [str(v) for v in config.labels]
    reference = np.array([float(classes["reference_shares"].get(k, 0.0)) for k in keys])
    rows = np.array([int(counts.get(k, 0)) for k in keys])
    se = np.sqrt(reference * (1 - reference) / n) if n else np.zeros(len(keys))
    k = classes["standard_errors"]
    return pd.DataFrame({
        "label": keys,
        "class_name": config.class_names,
        "rows": rows,
        "expected_rows": np.round(reference * n, 1),
        "share": (rows / n) if n else np.zeros(len(keys)),
        "reference_share": reference,
        "min_share": np.maximum(0.0, reference * classes["min_ratio"] - k * se),
        "max_share": np.minimum(1.0, reference * classes["max_ratio"] + k * se),
    })


@dataclass
class SuiteRun:
    """Raw outcome of running the suites: per table, the GX results and the expectations run."""

    results: dict[str, list]
    expectations: int
    seconds: float
    docs_index: str | None


def run_suites(tables: dict[str, pd.DataFrame], expectations: dict[str, list[dict]], run_name: str,
               docs_dir: Path | None = None) -> SuiteRun:
    """Validates each table with its expectations in one ephemeral GX context; builds Data Docs
    into `docs_dir` when given (their time is not in `seconds`)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    started = time.perf_counter()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        context.add_data_docs_site(site_name="keel", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    source = context.data_sources.add_pandas(name=run_name)
    results: dict[str, list] = {}
    total = 0
    for table_name, frame in tables.items():
        suite_expectations = expectations.get(table_name) or []
        if not suite_expectations:
            continue
        total += len(suite_expectations)
        batch_definition = source.add_dataframe_asset(name=table_name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"keel-{table_name}", expectations=suite_expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{run_name}-{table_name}", data=batch_definition, suite=suite))
        result_format = {"result_format": "COMPLETE", "partial_unexpected_count": MAX_EXAMPLES,
                         "unexpected_index_column_names": [c for c in INDEX_COLUMNS[table_name] if c in frame.columns]}
        result = definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
        results[table_name] = list(result.results)
    seconds = time.perf_counter() - started
    docs_index = None
    if docs_dir is not None:
        build_offline_site(context, "keel", Path(docs_dir))  # self-contained: opens offline
        docs_index = str(Path(docs_dir) / "index.html")
    return SuiteRun(results, total, seconds, docs_index)


def failures_of(run: SuiteRun, header: list[str], classes: pd.DataFrame | None) -> list[Failure]:
    return [_failure(table, r, header, classes) for table, results in run.results.items() for r in results if not r.success]


def validate_version(version: DatasetVersion, config: DatasetConfig, docs_dir: Path | None = None) -> ValidationReport:
    """Runs the dataset's suite (or its structural suite) on a stored version as training data;
    writes Data Docs (and report.json) to `docs_dir` when given."""
    if version.meta.get("quarantined") is not None:  # ingest set records aside (photos, texts): check those stored
        return validate_stored_version(version, config, docs_dir)
    started = time.perf_counter()
    suite = load_suite(config)
    profile = version.profile()
    header = version.meta["header"]
    classes = class_table(profile["label"], config, suite.classes)
    tables = {
        "schema": schema_table(header, config, kinds=version.meta.get("non_integer_columns")),
        "rows": profile,
        "classes": classes,
    }
    available = {"labels", "training"}
    expectations = {t: suite.expectations(t, available) for t in tables}
    if version.images_stored:  # leakage is measured on stored images only
        tables["leakage"] = leakage_table(version)
        expectations["leakage"] = leakage_expectations(config)
    run = run_suites(tables, expectations, f"{config.name}-{version.id}", docs_dir)
    return _report(config, version, len(profile), run, failures_of(run, header, classes), started, suite.name, docs_dir)


def _report(config: DatasetConfig, version: DatasetVersion, rows: int, run: SuiteRun, failures: list[Failure],
            started: float, suite: str, docs_dir: Path | None) -> ValidationReport:
    """The ValidationReport of a suite run, also written as report.json beside the Data Docs.
    A failed expectation marked `warn` (a leaked split without stop_on_leak) is a warning."""
    limit = config.validation.max_leaked_fraction
    for failure in failures:
        if failure.batch == "leakage":
            failure.observed = "; ".join(leakage_sentences(version, limit, over_only=True)) or failure.observed
            failure.examples = []
            failure.unexpected_count = failure.unexpected_percent = None  # one row per part: the share says it
    warnings = [f for f in failures if f.on_failure == "warn"]
    failures = [f for f in failures if f.on_failure != "warn"]
    report = ValidationReport(
        dataset=config.name, version=version.id, rows=rows, success=not failures,
        expectations=run.expectations, failures=failures, seconds=time.perf_counter() - started,
        docs_index=run.docs_index, suite=suite, warnings=warnings,
        split=version.split_description, leakage=leakage_sentences(version, limit))
    if docs_dir is not None:
        with atomic_path(Path(docs_dir) / "report.json") as tmp:
            tmp.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return report


def validate_stored_version(version: DatasetVersion, config: DatasetConfig, docs_dir: Path | None = None) -> ValidationReport:
    """The modality's checks (its `expectations`) on a version's stored photos or texts; the
    records ingest set aside are counted in the report."""
    started = time.perf_counter()
    config = version.classes(config)  # the classes ingest read, unless the config names them
    suite = structural_suite(config)
    profile = version.profile()
    stored = profile[profile["status"] == "ok"].reset_index(drop=True)
    classes = class_table(stored.get("label_index", stored["label"]).astype(str), config, suite["classes"])  # texts: names
    tables = {"rows": stored, "classes": classes, "leakage": leakage_table(version)}
    expectations = {**suite["suites"], "leakage": leakage_expectations(config)}
    run = run_suites(tables, expectations, f"{config.name}-{version.id}", docs_dir)
    return _report(config, version, len(stored), run, failures_of(run, [], classes), started,
                   f"{version.meta['format']} ({version.meta['quarantined']} records quarantined at ingest)", docs_dir)


def _failure(batch: str, result, header: list[str], classes: pd.DataFrame) -> Failure:
    expectation = result.expectation_config
    kwargs = expectation.kwargs
    details = result.result or {}
    rule = (expectation.meta or {}).get("rule", expectation.type)
    examples = []
    observed = None
    if batch == "schema" and expectation.type == "expect_column_distinct_values_to_contain_set":
        missing = [c for c in kwargs["value_set"] if c not in header]
        observed = "no columns at all (empty file?)" if not header else f"missing {_few(missing)}"
    elif batch == "schema" and kwargs.get("column") == "role":
        observed = f"unexpected {_few([str(e.get('column')) for e in details.get('unexpected_index_list') or []])}"
    elif batch == "schema" and expectation.type == "expect_column_values_to_be_unique":
        observed = f"repeated {_few(sorted({str(e.get('column')) for e in details.get('unexpected_index_list') or []}))}"
    if observed is None and details.get("unexpected_index_list"):
        for item in details["unexpected_index_list"][:MAX_EXAMPLES]:
            examples.append({k: _plain(v) for k, v in item.items() if v is not None and not (isinstance(v, str) and v == "")})
    elif observed is None and "observed_value" in details:
        observed = str(_plain(details["observed_value"]))
    if batch == "classes" and kwargs.get("column") == "rows" and classes is not None:
        absent = classes[(classes["rows"] == 0) & (classes["expected_rows"] >= MIN_EXPECTED_ROWS)]
        observed = f"missing {_few([f'{r.label} ({r.class_name})' for r in absent.itertuples()])}"
    meta = expectation.meta or {}
    return Failure(
        batch=batch, expectation=expectation.type, column=kwargs.get("column") or kwargs.get("column_A"), rule=rule,
        on_failure=meta.get("on_failure", "reject"),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        examples=examples, observed=observed,
    )


def _few(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _plain(value):
    """JSON-friendly scalars from numpy values."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
