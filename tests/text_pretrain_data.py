"""A few hundred real SMS messages as a text dataset config, for masked-language-model
pre-training and the classifiers fine-tuned from it."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import REPO
from tests.text_models import sms_rows

SMS_CONFIG = REPO / "conf" / "datasets" / "sms-spam.yaml"


def sms_config(folder: Path, name: str, rows: int = 300) -> Path:
    """The shipped sms-spam config pointing at the first `rows` usable messages (a CSV in
    `folder`), with small-data bounds and a small vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / f"{name}.csv"
    sms_rows(rows).to_csv(csv, index=False)
    config = yaml.safe_load(SMS_CONFIG.read_text())
    config.update(name=name, train=[{"path": str(csv)}])
    config["validation"] = {**config["validation"], "min_rows": 50}
    config["text"] = {**config["text"], "vocab_size": 1000}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
