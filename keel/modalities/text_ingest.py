"""The text modality's ingest and its row checks (keel.modalities.text delegates to these)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from keel.core.config import DatasetConfig
from keel.data.splits import plan_split
from keel.data.text_rule import TEXT_CHECKS
from keel.data.text_version import (class_lookup, quarantine_table, read_text_sources, record_text_split, text_classes,
                                    text_meta, text_profile, token_counts, token_quantiles)
from keel.data.textdups import TextFeatures
from keel.data.tokenizer import train_wordpiece
from keel.data.versions import IngestResult, StoredImages, VersionMeta, existing_version, store_version, version_id
from keel.modalities.expectations import class_expectations, expectation

TOKENIZER_FILE = "tokenizer.json"


def ingest_text(config: DatasetConfig, root: Path) -> IngestResult:
    """Reads every file once, quarantines the records that cannot serve as training texts (with
    the reason), groups near-duplicate texts, draws the split in whole groups, trains the
    WordPiece vocabulary on the training part alone and stores the version; a rerun on unchanged
    files (same bytes, same settings) parses nothing and reuses it."""
    sources = read_text_sources(config)
    vid = version_id(config, **sources.version_key(config))
    target, existing = existing_version(root, config, vid)
    if existing:
        return existing
    raw_classes, config = config.classes, text_classes(config, sources)
    profile, texts = text_profile(config, sources, class_lookup(config, raw_classes))
    kept = np.flatnonzero((profile["status"] == "ok").to_numpy())
    stored_texts = [texts[i] for i in kept]
    labels = profile["label_index"].to_numpy(dtype=np.int64)[kept]
    parts = np.where(profile["split"].to_numpy()[kept] == "test", "test", "pool")
    plan = plan_split(config, TextFeatures(config.text.ngram_words).grouping(stored_texts), labels, parts,
                      profile["group_value"].to_numpy()[kept] if config.group_column else None)
    row_ids = record_text_split(config, profile, texts, plan)
    # The vocabulary is learnt from the training part only: evaluation and test words stay unseen.
    tokenizer = train_wordpiece([stored_texts[i] for i in plan.indices("train")], config.text.vocab_size,
                                config.text.lowercase)
    profile["tokens"] = token_counts(tokenizer, profile, texts)
    train_tokens = profile["tokens"].to_numpy()[kept][plan.indices("train")]
    meta = VersionMeta.describe(config, vid, **text_meta(config, sources, profile), tokenizer=TOKENIZER_FILE,
                                vocab_size=tokenizer.get_vocab_size(), token_lengths=token_quantiles(train_tokens),
                                **plan.figures(row_ids))
    stored = pd.DataFrame({"text": stored_texts, "id": profile["id"].to_numpy()[kept].astype(str)})
    files = {"texts.parquet": lambda path: stored.to_parquet(path, index=False),
             TOKENIZER_FILE: lambda path: tokenizer.save(str(path))}
    return store_version(target, meta, profile, StoredImages(None, labels, plan),
                         {"quarantine.csv": quarantine_table(config, profile, texts)}, files)


def text_expectations(config: DatasetConfig) -> dict[str, list[dict]]:
    """Checks of a text version's records (one row each in its profile): each text_rule check
    (a record that breaks one is quarantined), a known label, no text in two splits, the row
    count; and each class's share near a uniform one."""
    policy = config.validation
    checks = [expectation("expect_column_values_to_be_in_set", rule, "quarantine", column=check, value_set=[False])
              for check, rule in TEXT_CHECKS.items()]
    rows = [
        *checks,
        expectation("expect_column_values_to_be_in_set", "labels must be the dataset's classes", "quarantine",
                    column="label_known", value_set=[True]),
        expectation("expect_column_values_to_be_in_set",
                    "no text may be in two splits (the same text in train and evaluation leaks the answer)", "reject",
                    column="duplicate_across_splits", value_set=[False]),
        expectation("expect_table_row_count_to_be_between",
                    f"the dataset must hold {policy.min_rows}-{policy.max_rows} usable texts", "reject",
                    min_value=policy.min_rows, max_value=policy.max_rows),
    ]
    return {"rows": rows, "classes": class_expectations()}
