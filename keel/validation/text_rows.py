"""The rows of a batch of texts: the per-record profile Great Expectations checks, the quarantine
its row-level failures make (one row per problem, the offending value cut and escaped by
keel.data.text_rule.printable), and the report's data files.

A record's number (`row`) is the reader's: the data row of a CSV, the row of a parquet file,
the line of a JSONL file.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from keel.core.config import DatasetConfig
from keel.data.neardup import nearest
from keel.data.text_rule import TEXT_CHECKS, printable, text_problems, usable
from keel.data.text_table import TextRows
from keel.data.text_version import class_lookup, label_text, token_counts
from keel.data.textdups import TextFeatures, normalised
from keel.data.versions import DatasetVersion
from keel.validation.quarantine import Judgement
from keel.validation.report import BatchResult
from keel.validation.report_files import finish_report
from keel.validation.text_suite import COPY, NEAR_COPY

QUARANTINE_COLUMNS = ["row", "id", "column", "value", "expectation", "rule", "check"]


@functools.lru_cache(maxsize=2)
def _training_texts(version_path: str, ngram_words: int) -> tuple[dict[str, str], np.ndarray, list[str]]:
    """(normalised text -> its id, word n-gram features, ids) of a version's stored texts; kept
    for the process, as a landing folder validates batch after batch against one version."""
    stored = pd.read_parquet(Path(version_path) / "texts.parquet")
    texts, ids = stored["text"].tolist(), stored["id"].astype(str).tolist()
    keys = {}
    for text, row_id in zip(texts, ids):
        keys.setdefault(normalised(text), row_id)
    return keys, TextFeatures(ngram_words).features(texts), ids


def _leaks(config: DatasetConfig, texts: list, ok: np.ndarray, version: DatasetVersion) -> dict[str, np.ndarray]:
    """Whether each usable text copies a training text exactly or nearly (cosine of word
    n-grams at the dataset's threshold), the similarity and the training text's id."""
    keys, features, ids = _training_texts(str(version.path), config.text.ngram_words)
    n = len(texts)
    copy, near = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    similarity, training_id = np.full(n, np.nan), np.full(n, "", dtype=object)
    good = np.flatnonzero(ok)
    for i in good:
        match = keys.get(normalised(texts[i]))
        if match is not None:
            copy[i], training_id[i], similarity[i] = True, match, 1.0
    rest = good[~copy[good]]
    if len(rest):
        index, sims = nearest(features, TextFeatures(config.text.ngram_words).features([texts[i] for i in rest]))
        similarity[rest] = sims
        near[rest] = (sims >= config.evaluation_split.threshold) & (index >= 0)
        training_id[rest[near[rest]]] = [ids[j] for j in index[near[rest]]]
    return {COPY: copy, NEAR_COPY: near, "training_similarity": similarity, "training_id": training_id}


def text_batch_profile(config: DatasetConfig, rows: TextRows, version: DatasetVersion, tokenizer,
                       raw_classes: dict) -> pd.DataFrame:
    """One row per record: number, id, label (as text) and whether it names a class (None when
    missing) and which, text_rule's checks, characters, tokens (NaN when the text is not usable),
    and the leak columns."""
    problems = text_problems(rows.texts, config.text.max_characters)
    ok = usable(problems)
    lookup = class_lookup(config, raw_classes)
    labels = [label_text(v) for v in rows.labels] if rows.labels is not None else [None] * len(rows)
    index = [lookup.get(v) if v is not None else None for v in labels]
    profile = pd.DataFrame({
        "row": rows.numbers, "id": pd.Series(rows.ids, dtype=object), "label": pd.Series(labels, dtype=object),
        "label_known": pd.Series([None if v is None else i is not None for v, i in zip(labels, index)], dtype=object),
        "class": pd.Series([None if i is None else str(config.labels[i]) for i in index], dtype=object),
    })
    profile = pd.concat([profile, problems], axis=1)
    profile["tokens"] = np.where(ok, token_counts(tokenizer, problems, rows.texts), np.nan)
    for column, values in _leaks(config, rows.texts, ok, version).items():
        profile[column] = values
    return profile


def _value(check: str, i: int, rows: TextRows, profile: pd.DataFrame) -> tuple[str, str]:
    """(the file's column at fault, its value as reports show it) for a failed check."""
    if check in ("label", "label_known"):
        return "label", printable(profile["label"].iloc[i])
    if check == "id":
        return "id", printable(profile["id"].iloc[i])
    value = printable(rows.texts[i])
    if check == "tokens":
        value = f"{int(profile['tokens'].iloc[i])} tokens: {value}"
    elif check in (COPY, NEAR_COPY):
        value = f"{value} (training id {profile['training_id'].iloc[i]})"
    return "text", value


def text_quarantine(run, rows: TextRows, profile: pd.DataFrame, config: DatasetConfig,
                    id_column: str | None) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per problem of every record that failed a row-level expectation, and those records."""
    columns = {"text": config.text_column, "label": config.label_column, "id": id_column or "id"}
    position = {int(r): i for i, r in enumerate(profile["row"])}
    records, bad = [], set()
    for result in run.results.get("rows", []):
        meta = result.expectation_config.meta or {}
        if result.success or meta.get("on_failure") != "quarantine":
            continue
        check = result.expectation_config.kwargs.get("column")
        for item in (result.result or {}).get("unexpected_index_list") or []:
            i = position[int(item["row"])]
            bad.add(i)
            kind, value = _value(check, i, rows, profile)
            records.append((int(profile["row"].iloc[i]), printable(profile["id"].iloc[i]), columns[kind], value,
                            result.expectation_config.type, meta.get("rule", ""), check))
    frame = pd.DataFrame.from_records(records, columns=QUARANTINE_COLUMNS)
    order = {c: k for k, c in enumerate(["label", "label_known", *TEXT_CHECKS, "tokens", COPY, NEAR_COPY, "id"])}
    frame = frame.assign(_order=frame["check"].map(order)).sort_values(["row", "_order"], kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True), np.array(sorted(bad), dtype=int)


def _json_value(value):
    """A record's value for JSON: NaN as null, anything JSON cannot hold as its text."""
    if isinstance(value, float) and np.isnan(value):
        return None
    return value if isinstance(value, (str, int, float, bool, list, dict, type(None))) else str(value)


def _quarantined_rows(rows: TextRows, profile: pd.DataFrame, quarantined: np.ndarray, config: DatasetConfig,
                      id_column: str | None, path: Path) -> None:
    """The quarantined records as read, one JSON object a line (a number stays a number; an
    undecodable byte is written as its escape), with their record number, to fix and send again."""
    with path.open("w", encoding="utf-8") as out:
        for i in quarantined:
            record = {"row": int(profile["row"].iloc[i])}
            if id_column and id_column in rows.columns:
                record[id_column] = profile["id"].iloc[i]
            record[config.text_column] = _json_value(rows.texts[i])
            if rows.labels is not None:
                record[config.label_column] = _json_value(rows.labels[i])
            out.write(json.dumps(record) + "\n")


def curated_text_columns(config: DatasetConfig) -> list[str]:
    """The columns a clean batch brings to the training data: label, group (when set), text."""
    return [config.label_column, *([config.group_column] if config.group_column else []), config.text_column]


def _clean_rows(rows: TextRows, profile: pd.DataFrame, clean: np.ndarray, labelled: bool, config: DatasetConfig,
                id_column: str | None, path: Path) -> None:
    """The records that passed: id (when the file has one), label as its class name, group, text."""
    columns = {}
    if id_column and id_column in rows.columns:
        columns[id_column] = pa.array(profile["id"].to_numpy()[clean].astype(str))
    if labelled:
        names = [config.class_names[config.labels.index(int(c))] for c in profile["class"].to_numpy()[clean]]
        columns[config.label_column] = pa.array(names, pa.string())
    if config.group_column and rows.groups is not None:
        columns[config.group_column] = pa.array([label_text(rows.groups[i]) for i in clean], pa.string())
    columns[config.text_column] = pa.array([rows.texts[i] for i in clean], pa.string())
    pq.write_table(pa.table(columns), path, compression="zstd")


def write_text_report(staged: Path, final: Path, result: BatchResult, rows: TextRows, profile: pd.DataFrame,
                      judged: Judgement, config: DatasetConfig, id_column: str | None) -> None:
    """Writes the report's files into `staged` (quarantine.csv, quarantined_rows.jsonl,
    clean.parquet when accepted, report.md/json, the marker); `result.files` names them in `final`."""
    started = time.perf_counter()
    files = {"report_json": str(final / "report.json"), "report_md": str(final / "report.md"),
             "docs_index": str(final / "docs" / "index.html"), "quarantine": str(final / "quarantine.csv")}
    judged.quarantine.to_csv(staged / "quarantine.csv", index=False)
    if len(judged.quarantined):
        _quarantined_rows(rows, profile, judged.quarantined, config, id_column, staged / "quarantined_rows.jsonl")
        files["quarantined_rows"] = str(final / "quarantined_rows.jsonl")
    if result.accepted and len(judged.clean):
        _clean_rows(rows, profile, judged.clean, result.labelled, config, id_column, staged / "clean.parquet")
        files["clean"] = str(final / "clean.parquet")
    finish_report(staged, result, files, started)
