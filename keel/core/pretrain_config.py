"""The settings of a masked-language-model pre-training (`keel pretrain`, keel.training.pretrain):
a light module, so that the command line builds its options without importing torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PretrainConfig(BaseModel):
    """Everything that decides a pre-training run; its hash keys the run's checkpoints."""

    model_config = ConfigDict(extra="forbid")

    model: Literal["bert-tiny"] = Field(default="bert-tiny", description="the encoder pre-trained from scratch")
    epochs: int = Field(default=40, ge=1, description="at most this many epochs; the time budget may plan fewer")
    time_budget: float | None = Field(default=300.0, ge=0.0, description="seconds for the epoch loop; the schedule "
                                      "spans the epochs that fit (0: no budget)")
    batch_size: int = Field(default=64, ge=1, description="texts per training step")
    learning_rate: float = Field(default=1e-3, gt=0.0, description="peak learning rate of the one-cycle schedule")
    weight_decay: float = Field(default=0.01, ge=0.0, description="AdamW weight decay")
    mask_probability: float = Field(default=0.15, gt=0.0, lt=1.0, description="share of each text's tokens hidden "
                                    "(80 % [MASK], 10 % a random token, 10 % unchanged)")
    max_length: int = Field(default=128, ge=8, le=512, description="tokens per text (longer ones are truncated); "
                            "classifiers fine-tuned from this encoder take at most this many")
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=0.5, description="share of the training rows (whole "
                                       "groups) held out to watch for early stopping")
    validation_texts: int = Field(default=256, ge=1, description="at most this many of them are scored each epoch")
    patience: int = Field(default=5, ge=1, description="epochs without validation improvement before stopping")
    seed: int = Field(default=0, description="seed of the initial weights, the shuffling and the masks")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: a GPU when there is one")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto", description="auto: bf16 autocast on GPUs and on CPUs with bf16 instructions")
    top_k: int = Field(default=5, ge=1, le=50, description="words the registered fill-mask model returns per [MASK]")
