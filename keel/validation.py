"""Great Expectations validation of pixel tables.

Checking each of 784 pixel columns with its own expectation takes GX 15-30 s on Sign-MNIST,
and melting the table into one 21-million-row column takes ~8 s. Instead, ingest reduces
every row to a profile (pixel count, min, max, and counts of null, non-numeric and
non-integer pixels, plus the first offending pixel), and GX checks every row of that
profile. The verdict is the same -- a row fails exactly when one of its pixels does -- and
each failing row still names its file, line, pixel column and value.

Three batches are validated:
- ``schema``: the header (column set and order);
- ``rows``: the per-row profile (labels, pixel ranges, nulls, row count);
- ``classes``: one row per configured class with its share of the rows.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from keel.config import DatasetConfig
from keel.datasets import DatasetVersion
from keel.io import atomic_path

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

    def summary(self) -> str:
        if self.success:
            return f"{self.dataset} {self.version}: all {self.expectations} expectations passed on {self.rows} rows"
        lines = [f"{self.dataset} {self.version}: {len(self.failures)} of {self.expectations} expectations failed on {self.rows} rows"]
        for failure in self.failures:
            lines.append(f"- {failure.sentence()}")
            for example in failure.examples:
                lines.append("    e.g. " + ", ".join(f"{k}={v}" for k, v in example.items()))
        if self.docs_index:
            lines.append(f"Data Docs: {self.docs_index}")
        return "\n".join(lines)

    def markdown(self) -> str:
        status = "passed" if self.success else "FAILED"
        out = [f"# Data validation {status}: {self.dataset} `{self.version}`", "",
               f"{self.rows} rows, {self.expectations} expectations, {self.seconds:.2f} s.", ""]
        if self.failures:
            out += ["| expectation | column | failing rows | examples |", "|---|---|---|---|"]
            for f in self.failures:
                examples = "<br>".join(", ".join(f"{k}={v}" for k, v in e.items()) for e in f.examples)
                count = "" if f.unexpected_count is None else f"{f.unexpected_count} ({f.unexpected_percent:.2f} %)"
                rule = f.rule + (f" (observed {f.observed})" if f.observed else "")
                out.append(f"| {rule} | {f.column or ''} | {count} | {examples} |")
        if self.docs_index:
            out += ["", f"Great Expectations Data Docs: `{self.docs_index}`"]
        return "\n".join(out)

    def to_dict(self) -> dict:
        return asdict(self)


def _expectations(config: DatasetConfig) -> dict[str, list]:
    """The suite, one list of GX expectations per batch, with the rule each states in words."""
    import great_expectations.expectations as gxe

    labels = [str(v) for v in config.labels]
    policy = config.validation
    n_pixels = config.image.n_pixels

    def notes(text):
        return {"notes": text, "meta": {"rule": text}}

    return {
        "schema": [
            gxe.ExpectTableColumnsToMatchOrderedList(
                column_list=config.expected_columns,
                **notes(f"columns must be {config.label_column}, {config.pixel_prefix}1..{config.pixel_prefix}{n_pixels} in this order")),
        ],
        "rows": [
            gxe.ExpectTableRowCountToBeBetween(
                min_value=policy.min_rows, max_value=policy.max_rows,
                **notes(f"the table must hold {policy.min_rows}-{policy.max_rows} rows")),
            gxe.ExpectColumnValuesToNotBeNull(column="label", **notes("every row needs a label")),
            gxe.ExpectColumnValuesToBeInSet(
                column="label", value_set=labels,
                **notes(f"labels must be one of the configured classes ({', '.join(labels)})")),
            gxe.ExpectColumnValuesToBeInSet(
                column="pixel_count", value_set=[n_pixels],
                **notes(f"every row needs {n_pixels} pixel columns")),
            gxe.ExpectColumnValuesToBeInSet(column="pixel_nulls", value_set=[0], **notes("pixels must not be empty")),
            gxe.ExpectColumnValuesToBeInSet(column="pixel_non_numeric", value_set=[0], **notes("pixels must be numbers")),
            gxe.ExpectColumnValuesToBeInSet(column="pixel_non_integer", value_set=[0], **notes("pixels must be whole numbers")),
            gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, **notes("pixels must be at least 0")),
            gxe.ExpectColumnValuesToBeBetween(column="pixel_max", max_value=255, **notes("pixels must be at most 255")),
            gxe.ExpectColumnDistinctValuesToContainSet(
                column="label", value_set=labels, **notes("every configured class must be present")),
        ],
        "classes": [
            gxe.ExpectColumnValuesToBeBetween(
                column="share_of_uniform", min_value=policy.min_class_share, max_value=policy.max_class_share,
                **notes(f"each class must hold {policy.min_class_share:g}-{policy.max_class_share:g} times "
                        "a uniform share of the rows")),
        ],
    }


# Columns that identify a failing row in each batch's examples.
_INDEX_COLUMNS = {
    "schema": [],
    "rows": ["file", "line", "label", "bad_pixel", "bad_value"],
    "classes": ["label", "class_name", "rows"],
}


def class_table(profile: pd.DataFrame, config: DatasetConfig) -> pd.DataFrame:
    """One row per configured class: its row count and share relative to a uniform share."""
    counts = profile["label"].value_counts()
    n, k = len(profile), len(config.labels)
    rows = [int(counts.get(str(label), 0)) for label in config.labels]
    return pd.DataFrame({
        "label": [str(v) for v in config.labels],
        "class_name": config.class_names,
        "rows": rows,
        "share_of_uniform": [(r / n * k) if n else 0.0 for r in rows],
    })


def validate_version(version: DatasetVersion, config: DatasetConfig, docs_dir: Path | None = None) -> ValidationReport:
    """Runs the suite on a stored version; writes Data Docs (and report.json) to `docs_dir` when given."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    started = time.perf_counter()
    profile = version.profile()
    header = version.meta["header"]
    batches = {
        "schema": pd.DataFrame(columns=header),
        "rows": profile,
        "classes": class_table(profile, config),
    }
    suites = _expectations(config)

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        context.add_data_docs_site(site_name="keel", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    source = context.data_sources.add_pandas(name=f"{config.name}-{version.id}")
    failures: list[Failure] = []
    total = 0
    for batch_name, expectations in suites.items():
        total += len(expectations)
        batch_definition = source.add_dataframe_asset(name=batch_name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"keel-{config.name}-{batch_name}", expectations=expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{config.name}-{version.id}-{batch_name}", data=batch_definition, suite=suite))
        result_format = {"result_format": "COMPLETE", "partial_unexpected_count": MAX_EXAMPLES}
        if _INDEX_COLUMNS[batch_name]:
            result_format["unexpected_index_column_names"] = _INDEX_COLUMNS[batch_name]
        result = definition.run(batch_parameters={"dataframe": batches[batch_name]}, result_format=result_format)
        failures += [_failure(batch_name, r, header, batches["classes"]) for r in result.results if not r.success]

    docs_index = None
    if docs_dir is not None:
        context.build_data_docs(site_names=["keel"])
        docs_index = str(Path(docs_dir) / "index.html")
    report = ValidationReport(
        dataset=config.name, version=version.id, rows=len(profile), success=not failures,
        expectations=total, failures=failures, seconds=time.perf_counter() - started, docs_index=docs_index)
    if docs_dir is not None:
        with atomic_path(Path(docs_dir) / "report.json") as tmp:
            tmp.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return report


def _failure(batch: str, result, header: list[str], classes: pd.DataFrame) -> Failure:
    expectation = result.expectation_config
    kwargs = expectation.kwargs
    details = result.result or {}
    rule = (expectation.meta or {}).get("rule", expectation.type)
    examples = []
    observed = None
    if batch == "schema":
        expected = result.expectation_config.kwargs["column_list"]
        missing = [c for c in expected if c not in header]
        extra = [c for c in header if c not in expected]
        parts = []
        if not header:
            parts.append("no columns at all (empty file?)")
        if missing:
            parts.append(f"missing {_few(missing)}")
        if extra:
            parts.append(f"unexpected {_few(extra)}")
        if not missing and not extra:
            parts.append("the same columns in another order")
        observed = "; ".join(parts)
    elif details.get("unexpected_index_list"):
        for item in details["unexpected_index_list"][:MAX_EXAMPLES]:
            examples.append({k: _plain(v) for k, v in item.items() if v not in ("", None)})
    elif "observed_value" in details:
        observed = str(_plain(details["observed_value"]))
    if expectation.type == "expect_column_distinct_values_to_contain_set":
        absent = classes[classes["rows"] == 0]
        observed = f"missing {_few([f'{r.label} ({r.class_name})' for r in absent.itertuples()])}"
    return Failure(
        batch=batch, expectation=expectation.type, column=kwargs.get("column"), rule=rule,
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
