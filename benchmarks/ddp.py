"""Benchmark: data-parallel training (`keel train --nproc N`) on the CPU with gloo, one epoch of
the full Sign-MNIST training rows, against the plain single-process loop.

Run it from the repository root:

    .venv/bin/python benchmarks/ddp.py                       # 1 epoch: plain, 1 and 2 processes
    .venv/bin/python benchmarks/ddp.py --epochs 2 --nproc 1 2 4 --json /tmp/ddp.json

Rows, in this order, each training the same TrainConfig (default cnn, batch 128, no time budget)
from the same seed on the same dataset version:
- plain: keel.training.train.train in this process, as `keel train` trains today (one process,
  torch using every core): the ratios' denominator;
- plain, 1 thread: the same with one torch thread, to tell what N processes gain by running N
  single-threaded steps side by side from what threads lose on a busy machine (an OpenMP
  thread that waits for a core another process holds stalls the step);
- N processes: keel.training.distributed.launch, N spawned processes joined with gloo, each on
  its share of every batch with cores // N threads (1 process: the launcher's cost alone).

`wall` is the whole call: starting the processes (each imports torch and Keel) and joining
them; `loop` is the epoch loop as the loop times it (training and validation passes); the
accuracy is the validation slice's after the last epoch. The dataset version is ingested once
into a temporary folder, removed at the end. The machine may be shared: the load average before
and after each row is printed beside it, and figures move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from keel.core.config import TrainConfig, load_dataset_config  # noqa: E402
from keel.modalities import ingest  # noqa: E402
from keel.training.distributed import launch, threads_per_rank  # noqa: E402
from keel.training.train import train  # noqa: E402

DATASET_CONFIG = REPO / "conf" / "datasets" / "sign-mnist.yaml"
CPU = torch.device("cpu")


def train_rank(device, version, config):
    """What each rank runs (module-level: the spawned processes unpickle it by name)."""
    return train(version, config, device, progress=False)


def row(label: str, processes: int, threads: int, run) -> dict:
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = run()
    wall = time.perf_counter() - started
    last = result.history[-1]
    return {"run": label, "processes": processes, "threads_each": threads, "wall_seconds": wall,
            "loop_seconds": result.loop_seconds, "train_images_per_second": last["images_per_second"],
            "val_loss": last["val_loss"], "val_accuracy": last["val_accuracy"],
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def table(rows: list[dict]) -> str:
    plain = rows[0]
    lines = ["| run | processes x threads | wall s | loop s | train images/s | val loss | val accuracy "
             "| wall / plain | loop / plain | load before, after |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['processes']} x {r['threads_each']} | {r['wall_seconds']:.1f} | "
                     f"{r['loop_seconds']:.1f} | {r['train_images_per_second']:.0f} | {r['val_loss']:.4f} | "
                     f"{r['val_accuracy']:.4f} | {r['wall_seconds'] / plain['wall_seconds']:.2f} | "
                     f"{r['loop_seconds'] / plain['loop_seconds']:.2f} | {r['load_before']:.1f}, {r['load_after']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts to run")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parser.parse_args()
    config = TrainConfig(epochs=args.epochs, time_budget=0)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="keel-bench-ddp-") as tmp:
        started = time.perf_counter()
        version = ingest(load_dataset_config(DATASET_CONFIG), root=Path(tmp) / "versions").version
        print(f"dataset version {version.id[:12]} ingested in {time.perf_counter() - started:.1f} s; "
              f"{cores} cores, torch {torch.__version__}", flush=True)
        torch.set_num_threads(cores)  # as keel.models.device.set_threads does for `keel train`
        rows = [row("plain loop, this process", 1, cores, lambda: train(version, config, CPU, progress=False))]
        print(table(rows), flush=True)
        torch.set_num_threads(1)
        rows.append(row("plain loop, 1 thread", 1, 1, lambda: train(version, config, CPU, progress=False)))
        print(table(rows).splitlines()[-1], flush=True)
        for nproc in args.nproc:
            rows.append(row("launch, gloo", nproc, threads_per_rank(nproc),
                            lambda n=nproc: launch(n, CPU, train_rank, version, config)))
            print(table(rows).splitlines()[-1], flush=True)
    print("\n" + table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"epochs": args.epochs, "cores": cores, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
