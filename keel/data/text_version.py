"""The parts of a text dataset version: reading and hashing the configured files, the classes,
the per-record profile (keel.data.text_rule's checks, known labels, test copies of training
texts), the split recorded in it, token counts, and what meta.json and quarantine.csv say.
The text modality (keel.modalities.text) puts them together into a version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from keel.core.config import DatasetConfig
from keel.core.errors import DatasetError
from keel.core.io import read_bytes, verify_sha256
from keel.core.secrets import redact
from keel.data.curated import curated_batches, curated_sources
from keel.data.splits import SplitPlan
from keel.data.text_rule import TEXT_CHECKS, printable, text_problems, usable
from keel.data.text_table import TextRows, read_text_file, safe_text
from keel.data.textdups import normalised
from keel.data.versions import source_name

TEXT_FORMAT = 1  # part of a text version's id: bump when what a text version stores changes

# Every reason ingest sets a record aside: text_rule's checks, then the label, then a leak.
INGEST_CHECKS = {
    **TEXT_CHECKS,
    "label_unknown": "the label must be one of the dataset's classes (it is missing or unknown)",
    "duplicate_across_splits": "a test text must not repeat a training text (after lowercasing and collapsing "
                               "whitespace): the copy would measure memory, not generalisation",
}
TOKEN_QUANTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)


@dataclass
class TextSources:
    """Every configured file (training files, then curated batches, then test files) read."""

    files: list[tuple[str, TextRows]]  # (split: train or test, records)

    def version_key(self, config: DatasetConfig) -> dict:
        """What, besides the settings every version depends on, decides a text version's id."""
        return {"text_format": TEXT_FORMAT, "sources": [{"split": s, "sha256": r.sha256} for s, r in self.files],
                "text_column": config.text_column, "label_column": config.label_column, "id_column": config.id_column,
                "group_column": config.group_column, "text": config.text.model_dump(), "classes": config.class_names}


def read_text_sources(config: DatasetConfig) -> TextSources:
    """The training files, the curated batches and the test files of `config`, each checked
    against its configured sha256 and read."""
    listed = [("train", s) for s in config.train] + [("train", s) for s in curated_sources(config.name)]
    listed += [("test", s) for s in config.test]
    files = []
    for split, source in listed:
        url = config.resolve(source.path)
        data = read_bytes(url)
        verify_sha256(url, data, source.sha256)
        files.append((split, read_text_file(url, config, data, require_labels=True, fmt=source.format)))
    return TextSources(files)


def label_text(value) -> str | None:
    """A raw label as the text classes are named by (a whole float such as 1.0 as "1"; an
    undecodable byte as \\xNN), None when missing."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return safe_text(value)


def text_classes(config: DatasetConfig, sources: TextSources) -> DatasetConfig:
    """`config` with classes 0..K-1: its own class names, else the training files' distinct
    labels (numerically sorted when all are whole numbers, else alphabetically)."""
    if config.classes:
        return config.with_classes(config.class_names)
    names = {label_text(v) for split, rows in sources.files if split == "train" for v in rows.labels} - {None}
    numeric = all(name.lstrip("-").isdigit() for name in names)
    ordered = sorted(names, key=lambda n: (int(n), n) if numeric else (0, n))
    if len(ordered) < 2:
        raise DatasetError(f"{config.where}: the training files hold {len(ordered)} distinct label(s) in column "
                           f"'{config.label_column}'; a classifier needs two or more (list them under classes:)")
    return config.with_classes(ordered)


def class_lookup(config: DatasetConfig, raw_classes: dict[int, str]) -> dict[str, int]:
    """Label text -> class index: the class names, and the raw values the config keyed them by
    (classes {0: ham, 1: spam} also read labels 0 and 1); a name wins over a raw value."""
    lookup = {str(raw): config.class_names.index(name) for raw, name in raw_classes.items()}
    lookup.update({name: i for i, name in enumerate(config.class_names)})
    return lookup


def text_profile(config: DatasetConfig, sources: TextSources, lookup: dict[str, int]) -> tuple[pd.DataFrame, list]:
    """(one profile row per record of every file: where it comes from, its label, text_rule's
    checks, whether its label is known and whether a test text repeats a training text, its
    status and first reason; every record's raw text value)."""
    frames, texts = [], []
    for split, rows in sources.files:
        labels = [label_text(v) for v in rows.labels]
        frame = pd.DataFrame({"split": split, "file": source_name(rows.file), "source": rows.sha256[:12],
                              "row": rows.numbers, "id": rows.ids, "label": labels,
                              "group_value": [label_text(v) for v in rows.groups] if rows.groups is not None else None})
        frame = pd.concat([frame, text_problems(rows.texts, config.text.max_characters)], axis=1)
        frame["label_index"] = [lookup.get(v, -1) if v is not None else -1 for v in labels]
        frame["label_known"] = frame["label_index"] >= 0
        frames.append(frame)
        texts += rows.texts
    profile = pd.concat(frames, ignore_index=True)
    if not config.group_column:
        profile = profile.drop(columns="group_value")
    ok_text = usable(profile)
    keys = np.array([normalised(t) if good else "" for t, good in zip(texts, ok_text)], dtype=object)
    training = set(keys[ok_text & (profile["split"] == "train").to_numpy()])
    repeats = np.fromiter((key in training for key in keys), dtype=bool, count=len(keys))  # np.isin sorts objects: slow
    profile["duplicate_across_splits"] = ok_text & (profile["split"] == "test").to_numpy() & repeats
    checks = [*TEXT_CHECKS, "label_unknown", "duplicate_across_splits"]
    broken = profile[list(TEXT_CHECKS)].assign(label_unknown=~profile["label_known"],
                                                duplicate_across_splits=profile["duplicate_across_splits"])
    first = broken[checks].to_numpy().argmax(axis=1)
    bad = broken[checks].to_numpy().any(axis=1)
    profile["status"] = np.where(bad, "quarantined", "ok")
    profile["reason"] = np.where(bad, np.asarray(checks, dtype=object)[first], "")
    return profile, texts


def record_text_split(config: DatasetConfig, profile: pd.DataFrame, texts: list, plan: SplitPlan) -> np.ndarray:
    """Writes the drawn part, group and stored position of every kept record into the profile,
    and flags stored texts that sit (after lowercasing) in two parts (only a group column or a
    random split can put them there); returns the stored rows' ids (source:row). No training
    text left is a DatasetError."""
    kept = (profile["status"] == "ok").to_numpy()
    if not (plan.parts == "train").any():
        raise DatasetError(f"{config.where}: no usable training texts ({int((~kept).sum())} records quarantined; "
                           "see the reasons in the version's quarantine.csv or with `keel train`)")
    profile["part"] = ""
    profile.loc[kept, "part"] = plan.parts
    profile["group"] = -1
    profile.loc[kept, "group"] = plan.groups
    profile["stored"] = -1
    profile.loc[kept, "stored"] = np.arange(int(kept.sum()))
    keys = pd.Series([normalised(texts[i]) for i in np.flatnonzero(kept)])
    parts_per_text = pd.Series(plan.parts).groupby(keys).transform("nunique").to_numpy()
    profile.loc[kept, "duplicate_across_splits"] = parts_per_text > 1
    return (profile.loc[kept, "source"] + ":" + profile.loc[kept, "row"].astype(str)).to_numpy()


def token_counts(tokenizer, profile: pd.DataFrame, texts: list) -> np.ndarray:
    """Each record's length in the version's WordPiece tokens, [CLS] and [SEP] included (as the
    models see it before truncation); 0 for a record whose text is not usable."""
    good = np.flatnonzero(usable(profile))
    counts = np.zeros(len(profile), dtype=np.int64)
    if len(good):
        counts[good] = [len(e.ids) for e in tokenizer.encode_batch([texts[i] for i in good])]
    return counts


def token_quantiles(counts: np.ndarray) -> dict[str, float]:
    """Quantiles of token counts, "p0" .. "p100" (validation bounds incoming texts by them)."""
    if not len(counts):
        return {}
    return {f"p{q}": round(float(np.percentile(counts, q)), 2) for q in TOKEN_QUANTILES}


def quarantine_table(config: DatasetConfig, profile: pd.DataFrame, texts: list) -> pd.DataFrame:
    """The records set aside: file, row, id, the column at fault, its value as reports show it
    (keel.data.text_rule.printable), the reason in words and the check's name."""
    out = profile.loc[profile["status"] != "ok", ["file", "row", "id", "reason", "label"]]
    label = out["reason"] == "label_unknown"
    values = [printable(lab) if is_label else printable(texts[i]) for i, lab, is_label in zip(out.index, out["label"], label)]
    return pd.DataFrame({"file": out["file"], "row": out["row"], "id": out["id"],
                         "column": np.where(label, config.label_column, config.text_column), "value": values,
                         "reason": out["reason"].map(INGEST_CHECKS), "check": out["reason"]})


def text_meta(config: DatasetConfig, sources: TextSources, profile: pd.DataFrame) -> dict:
    """What a text version's meta.json records of its files and rows."""
    kept = profile["status"] == "ok"
    header = sources.files[0][1].columns if sources.files else []
    return {
        "sources": [{"split": split, "path": redact(rows.file), "sha256": rows.sha256, "records": len(rows)}
                    for split, rows in sources.files],
        "header": header, "headers_differ": [source_name(r.file) for _, r in sources.files if r.columns != header],
        "rows": int(kept.sum()), "quarantined": int((~kept).sum()), "text_column": config.text_column,
        "group_column": config.group_column, "curated_batches": curated_batches(config.name), "images_stored": True,
    }
