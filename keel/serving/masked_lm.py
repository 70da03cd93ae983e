"""A pre-trained masked language model as an MLflow pyfunc model (the course's fill-mask demo),
Keel's verified loader for it, and the loader of a registered model that starts another one
(`--backbone models:/NAME@alias`: an image model's features, or a text model's encoder).

The fill-mask model takes a DataFrame whose text column holds texts with [MASK] in them and
returns, for each [MASK], the `top_k` likeliest tokens of its vocabulary with their
probabilities (one row per row, mask and rank). It is logged from code (mlflow_fill_mask.py)
with its weights, its JSON config and its tokenizer (`tokenizer`) as artifacts; Keel's own
loader builds it from the files keel.tracking.registry verified, unpickling nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import mlflow
import pandas as pd
import torch

from keel.core.errors import KeelError
from keel.data.tokenizer import SPECIAL, load_tokenizer
from keel.modalities import modality_for
from keel.models.device import autocast, select_device, select_precision
from keel.models.masked_lm import TASK, build_masked_lm
from keel.models.transfer import ParentModel
from keel.serving.pyfunc import PyfuncKind, load_verified_model
from keel.tracking import client as tracking
from keel.tracking.registry import resolve_model, verified_artifacts

CONFIG_KEY = "mlm_config"  # the JSON config artifact of a fill-mask model (a classifier's is model_config)
MASK = "[MASK]"
COLUMNS = ["row", "mask", "rank", "token", "probability"]
SCORING_BATCH = 128  # texts per forward pass


class FillMask(mlflow.pyfunc.PythonModel):
    """Texts with [MASK] in them (the model's text column, `text` for the shipped datasets) in;
    for each [MASK] the `top_k` likeliest tokens out: row (0-based), mask (0-based, in the
    row's order), rank (1 = likeliest), token, probability."""

    def load_context(self, context):
        self.config = json.loads(Path(context.artifacts[CONFIG_KEY]).read_text())
        if "tokenizer" not in context.artifacts:
            raise KeelError("this masked language model was logged without its tokenizer artifact; register it "
                            "again with `keel pretrain`")
        self.config["tokenizer_file"] = str(context.artifacts["tokenizer"])  # known at run time only, never logged
        self.device = select_device("auto")
        self.precision = select_precision(self.config.get("inference_precision", "auto"), self.device)
        model = build_masked_lm(self.config["build"])
        model.load_state_dict(torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True))
        self.model = model.eval().to(self.device)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        top_k = int((params or {}).get("top_k") or self.config.get("top_k", 5))
        prepared = modality_for(self.config).preprocess(model_input, self.config)
        if len(prepared.problems):
            raise ValueError(prepared.first_problem())
        ids = prepared.inputs
        tokenizer = load_tokenizer(self.config["tokenizer_file"])
        masked = ids == tokenizer.token_to_id(MASK)
        missing = (~masked.any(1)).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"row {missing[0]} has no {MASK} within its first {self.config['max_length']} tokens; "
                             f"put {MASK} where a word is to be guessed")
        rows = []
        for start in range(0, len(ids), SCORING_BATCH):
            rows += self._top_tokens(ids[start:start + SCORING_BATCH], masked[start:start + SCORING_BATCH], start,
                                     top_k, tokenizer)
        return pd.DataFrame.from_records(rows, columns=COLUMNS)

    @torch.no_grad()
    def _top_tokens(self, ids: torch.Tensor, masked: torch.Tensor, first_row: int, top_k: int, tokenizer) -> list[tuple]:
        """(row, mask, rank, token, probability) of the `top_k` ordinary tokens at each [MASK] of `ids`."""
        with autocast(self.device, self.precision):
            logits = self.model.token_logits(ids.to(self.device)).float()
        logits[..., :len(SPECIAL)] = float("-inf")  # [PAD], [CLS] ... are no answer
        where = masked[:, :logits.shape[1]].nonzero().tolist()
        probabilities = torch.softmax(logits[masked[:, :logits.shape[1]].to(self.device)], dim=-1)
        best = probabilities.topk(min(top_k, probabilities.shape[1]), dim=-1)
        records, seen = [], {}
        for (row, _), values, indices in zip(where, best.values.tolist(), best.indices.tolist()):
            mask = seen[row] = seen.get(row, -1) + 1
            records += [(first_row + row, mask, rank + 1, tokenizer.id_to_token(token), value)
                        for rank, (value, token) in enumerate(zip(values, indices))]
        return records

    def hold_tokenizer(self) -> None:
        """Points the config at a copy of the tokenizer that lives as long as this model (the
        verified download it was loaded from is removed once loading ends)."""
        self.config["tokenizer_file"] = held_copy(self.config["tokenizer_file"], self)


def held_copy(path: str, owner: object) -> str:
    """A temporary copy of the file at `path`, removed once `owner` is garbage."""
    descriptor, copy = tempfile.mkstemp(prefix="keel-tokenizer-", suffix=".json")
    with os.fdopen(descriptor, "wb") as target, open(path, "rb") as source:
        shutil.copyfileobj(source, target)
    weakref.finalize(owner, _remove, copy)
    return copy


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


FILL_MASK = PyfuncKind("model", "mlflow_fill_mask.py", CONFIG_KEY, FillMask, params={"top_k": 5})


class _Context:
    """The slice of mlflow's PythonModelContext that load_context reads."""

    def __init__(self, artifacts: dict):
        self.artifacts = artifacts


def load_verified_mlm(model_uri: str) -> FillMask:
    """The FillMask model of a registered version (`models:/NAME/VERSION`, `models:/NAME@alias`)
    built from files verified against the manifest Keel recorded at registration: JSON config,
    JSON tokenizer, weights loaded with `weights_only=True`; no code from the artifact store runs."""
    with verified_artifacts(model_uri) as (ref, artifacts):
        if {"weights", CONFIG_KEY, "tokenizer"} - set(artifacts):
            raise KeelError(f"model {ref.name} version {ref.version} is not a Keel masked language model (its MLmodel "
                            f"names no weights, {CONFIG_KEY} and tokenizer artifacts); pass one `keel pretrain` registered")
        model = FillMask()
        model.load_context(_Context(artifacts))
        model.hold_tokenizer()
    return model


def load_backbone(model_uri: str) -> ParentModel:
    """A registered model whose trained features start a new model (`--backbone`): a fill-mask
    model's encoder or a classifier, loaded from verified files. The version the reference
    resolves to now is the one loaded, and its config names it (`registered_version`)."""
    client = tracking.client()
    ref = resolve_model(client, model_uri)
    tags = client.get_model_version(ref.name, ref.version).tags or {}
    loaded = load_verified_mlm(ref.uri) if tags.get("task") == TASK else load_verified_model(ref.uri)
    config = {**loaded.config, "registered_version": ref.uri}
    if "tokenizer_file" in config:  # the loaded model's copy goes with it: this one lives as long as the network
        config["tokenizer_file"] = held_copy(config["tokenizer_file"], loaded.model)
    return ParentModel(model_uri, loaded.model, config)
