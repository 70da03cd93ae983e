"""Benchmark: bf16 autocast against float32 for Keel's default training, same data, same seed.

    .venv/bin/python benchmarks/precision.py [--epochs 4]

Prints seconds per epoch and evaluation accuracy for each precision, and the speed-up. The
two runs go back to back, so on a noisy machine run it more than once.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from keel.core.config import TrainConfig, load_dataset_config
from keel.modalities import ingest
from keel.data.batches import load_split, training_splits
from keel.models.device import predict_logits, select_device
from keel.training.train import fit

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    args = parser.parse_args()
    device = select_device()
    with tempfile.TemporaryDirectory() as tmp:
        version = ingest(load_dataset_config(REPO / "conf/datasets/sign-mnist.yaml"), root=Path(tmp)).version
        train, validation = training_splits(version, TrainConfig(), device)
        evaluation = load_split(version, version.indices("evaluation"), device)
        results = {}
        for precision in ("bf16", "fp32"):
            config = TrainConfig(epochs=args.epochs, precision=precision)
            result = fit(train, validation, len(version.meta["labels"]), config, progress=False)
            logits = predict_logits(result.model, evaluation.images, device, precision)
            accuracy = (logits.argmax(1) == evaluation.targets).float().mean().item()
            seconds = sum(h["epoch_seconds"] for h in result.history) / len(result.history)
            results[precision] = (seconds, accuracy)
            print(f"{precision}: {seconds:.2f} s/epoch, evaluation accuracy {accuracy:.4f} "
                  f"({len(evaluation)} rows, {result.epochs_run} epochs, {device})", flush=True)
    print(f"bf16 speed-up: {results['fp32'][0] / results['bf16'][0]:.2f}x; "
          f"accuracy difference {results['bf16'][1] - results['fp32'][1]:+.4f}; torch {torch.__version__}")


if __name__ == "__main__":
    main()
