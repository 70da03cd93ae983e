"""Fresh/rotten fruit (6 classes): validation accuracy and time of Keel's two-phase training
without ImageNet weights, against a plain PyTorch loop in the same run.

    .venv/bin/python benchmarks/train_fruits.py [--epochs N] [--skip-plain]

Keel: ingest of data/fruits (stored 128 px), then `keel.stages.training.train_stage` with the training
block of conf/datasets/fruits.yaml (ResNet-18 at 96 px from scratch, 2 head epochs on cached
features, then N fine-tuning epochs on photos augmented by a DataLoader worker), then
evaluation on valid/ (the course's validation set). Plain loop: the course's way, a
torchvision ImageFolder that decodes and augments the JPEGs in one DataLoader worker every
epoch, the same network, optimiser, schedule, batch size and epochs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CONFIG = str(REPO / "conf" / "datasets" / "fruits.yaml")


def keel_run(epochs: int) -> dict:
    from keel.core.config import TrainConfig, load_dataset_config
    from keel.stages.evaluation import evaluate_stage
    from keel.stages.ingest import ingest_stage
    from keel.stages.runs import start_run_stage
    from keel.stages.training import train_stage

    started = time.perf_counter()
    version = ingest_stage(CONFIG)
    ingest_seconds = time.perf_counter() - started
    settings = {**load_dataset_config(CONFIG).training, **({"epochs": epochs} if epochs else {})}
    train = TrainConfig(**settings)
    run = start_run_stage(CONFIG, version, train, fresh=True)
    trained = train_stage(run, version, train)
    metrics = evaluate_stage(run, version, trained)
    history = trained.history
    phase1 = [h for h in history if h["phase"] == 1]
    return {"accuracy": metrics["evaluation"]["accuracy"], "rows": metrics["evaluation"]["rows"],
            "loop_seconds": trained.loop_seconds, "ingest_seconds": ingest_seconds,
            "phase1_seconds": sum(h["epoch_seconds"] for h in phase1),
            "phase2_epoch_seconds": [h["epoch_seconds"] for h in history if h["phase"] == 2],
            "best_epoch": trained.best_epoch, "epochs": len(history), "total_seconds": time.perf_counter() - started,
            "settings": settings, "worst": metrics["evaluation"]["worst_classified_png"]}


def plain_run(epochs: int, settings: dict) -> dict:
    import torch
    import torch.nn.functional as F
    import torchvision
    from torchvision.transforms import v2

    torch.manual_seed(0)
    size, augment = settings["image_size"], settings["augment"]
    normalize = v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train_tf = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(size, scale=(augment["crop_scale_min"], 1.0)),
                           v2.RandomHorizontalFlip(), v2.RandomRotation(augment["rotation_degrees"]),
                           v2.ColorJitter(0.3, 0.3, 0.3), v2.ToDtype(torch.float32, scale=True), normalize])
    valid_tf = v2.Compose([v2.ToImage(), v2.Resize((size, size)), v2.ToDtype(torch.float32, scale=True), normalize])
    train = torchvision.datasets.ImageFolder(str(REPO / "data" / "fruits" / "train"), transform=train_tf)
    valid = torchvision.datasets.ImageFolder(str(REPO / "data" / "fruits" / "valid"), transform=valid_tf)
    loader = torch.utils.data.DataLoader(train, batch_size=settings["batch_size"], shuffle=True, drop_last=True,
                                         num_workers=1, persistent_workers=True)
    valid_loader = torch.utils.data.DataLoader(valid, batch_size=128, num_workers=1)
    model = torchvision.models.resnet18(weights=None, num_classes=len(train.classes)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["learning_rate"], weight_decay=settings["weight_decay"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings["learning_rate"], epochs=epochs,
                                                    steps_per_epoch=len(loader))
    started = time.perf_counter()
    best, per_epoch = 0.0, []
    for _ in range(epochs):
        tick = time.perf_counter()
        model.train()
        for images, targets in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(images.contiguous(memory_format=torch.channels_last)).float(), targets,
                                       label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        per_epoch.append(time.perf_counter() - tick)
        model.eval()
        correct = 0
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for images, targets in valid_loader:
                correct += int((model(images).argmax(1) == targets).sum())
        best = max(best, correct / len(valid))
    return {"loop_seconds": time.perf_counter() - started, "epoch_seconds": per_epoch, "best_accuracy": best,
            "last_accuracy": correct / len(valid)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=0, help="phase 2 epochs (default: the YAML's)")
    parser.add_argument("--skip-plain", action="store_true")
    args = parser.parse_args()
    os.environ["KEEL_HOME"] = tempfile.mkdtemp(prefix="keel-bench-fruits-")
    import torch

    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    keel = keel_run(args.epochs)
    s = keel["settings"]
    phase2 = keel["phase2_epoch_seconds"]
    print(f"\nKeel: {s['model']} at {s['image_size']} px, no ImageNet weights, {s['head_epochs']} head + "
          f"{len(phase2)} fine-tuning epochs")
    print(f"  validation accuracy (valid/, {keel['rows']} photos): {keel['accuracy']:.4f}  (best epoch {keel['best_epoch']})")
    print(f"  ingest {keel['ingest_seconds']:.1f} s; training loop {keel['loop_seconds']:.1f} s "
          f"(phase 1 {keel['phase1_seconds']:.1f} s, phase 2 {sum(phase2) / len(phase2):.2f} s/epoch); "
          f"all stages {keel['total_seconds']:.1f} s; worst-classified grid {keel['worst']}")
    if args.skip_plain:
        return
    plain = plain_run(len(phase2), s)
    per = plain["epoch_seconds"]
    print(f"\nplain PyTorch loop (ImageFolder decoding JPEGs each epoch, same model and schedule, {len(per)} epochs)")
    print(f"  validation accuracy: last {plain['last_accuracy']:.4f}, best {plain['best_accuracy']:.4f}")
    print(f"  training loop {plain['loop_seconds']:.1f} s ({sum(per) / len(per):.2f} s/epoch)")
    print(f"\nratio Keel / plain, seconds per training epoch: {(sum(phase2) / len(phase2)) / (sum(per) / len(per)):.2f}")


if __name__ == "__main__":
    main()
