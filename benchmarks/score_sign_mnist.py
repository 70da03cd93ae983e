"""Benchmark: batch-scoring throughput on the full Sign-MNIST training CSV (27,455 rows).

    .venv/bin/python benchmarks/score_sign_mnist.py

In a temporary KEEL_HOME it trains the default model for one epoch (throughput does not
depend on the weights), registers it, then measures in this order:

1. `keel.serving.predict.score_files` end to end, first call in this process: reading and checking
   the gzip CSV, loading the registered model, scoring, writing parquet + errors + manifest;
2. the same call again (steady state of a long-running worker);
3. the model alone: the served inference model (batch-norm folded, bf16 where it pays) on the
   27,455 images already in memory, batch 1024;
4. a plain PyTorch loop written the course's way, in the same run: the trained network in
   eval mode, float32, a DataLoader with batch 32;
5. `keel predict` as a user runs it (a subprocess: imports, Prefect's temporary API, flow).

Targets on 2 CPU cores: >= 10,000 images/s for the model alone, >= 5,000 end to end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CSV = REPO / "data" / "sign-mnist" / "sign_mnist_train.csv.gz"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="keel-score-bench-") as tmp:
        home = Path(tmp)
        shutil.copytree(REPO / "conf", home / "conf")
        (home / "data").mkdir()
        (home / "data" / "sign-mnist").symlink_to(REPO / "data" / "sign-mnist", target_is_directory=True)
        os.environ["KEEL_HOME"] = str(home)
        os.environ.pop("MLFLOW_TRACKING_URI", None)

        import numpy as np
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from keel.stages.evaluation import evaluate_stage
        from keel.stages.ingest import ingest_stage
        from keel.stages.registration import promote_stage, register_stage
        from keel.stages.runs import start_run_stage
        from keel.stages.training import load_trained, train_stage
        from keel.tracking import client as tracking
        from keel.core.config import TrainConfig
        from keel.tracking.promotion import PromotionPolicy

        config = str(home / "conf" / "datasets" / "sign-mnist.yaml")
        print("training the default model for 1 epoch to have something to score ...", flush=True)
        version = ingest_stage(config)
        train = TrainConfig(epochs=1)
        run = start_run_stage(config, version, train)
        trained = train_stage(run, version, train, progress=False)
        course_model, _ = load_trained(trained.model_path)
        metrics = evaluate_stage(run, version, trained)
        registered = register_stage(run, version, trained, metrics)
        promote_stage(version, registered, metrics, PromotionPolicy(floor=0.0))
        name = registered.name

        from keel.serving.predict import score_files
        from keel.serving.pyfunc import load_verified_model
        from keel.models.device import predict_logits

        client = tracking.client()
        out = home / "scored" / "preds.parquet"
        figures = {}
        for label in ("end to end, first call", "end to end, second call"):
            summary = score_files(client, name, CSV, out, force=True)
            figures[label] = (summary.rows_scored, summary.seconds)
            print(f"{label}: {summary.rows_scored} rows in {summary.seconds:.2f} s "
                  f"(model {summary.model_seconds:.2f} s)", flush=True)
        rows = summary.rows_scored

        from keel.data.versions import DatasetVersion

        images = torch.from_numpy(np.array(DatasetVersion(version.path).images())).permute(0, 3, 1, 2).contiguous()
        classifier = load_verified_model(f"models:/{name}@champion")
        predict_logits(classifier.model, images[:1024], classifier.device, classifier.precision)  # warm-up
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            predict_logits(classifier.model, images, classifier.device, classifier.precision, batch_size=1024)
            best = min(best, time.perf_counter() - started)
        figures["model alone (served inference model)"] = (len(images), best)

        # The course's way: the trained network as it is, eval mode, float32, DataLoader batch 32.
        course_model = course_model.to(memory_format=torch.contiguous_format).eval()
        loader = DataLoader(TensorDataset(images.float() / 255), batch_size=32)
        started = time.perf_counter()
        with torch.no_grad():
            for (batch,) in loader:
                course_model(batch).argmax(1)
        figures["plain PyTorch loop (course style)"] = (len(images), time.perf_counter() - started)

        keel = Path(sys.executable).parent / "keel"
        started = time.perf_counter()
        done = subprocess.run([str(keel), "predict", "--model", name, "--input", str(CSV), "--output",
                               str(home / "scored" / "cli.parquet")], capture_output=True, text=True, cwd=home)
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-3000:])
            raise SystemExit("keel predict failed")
        figures["`keel predict` process (imports, Prefect API, flow)"] = (rows, time.perf_counter() - started)

    print()
    print("=" * 78)
    print(f"Scoring the full Sign-MNIST training CSV ({rows} rows, 28x28, default `cnn`)")
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"inference precision {classifier.precision}")
    print("-" * 78)
    for label, (n, seconds) in figures.items():
        print(f"{label:52} {seconds:7.2f} s  {n / seconds:9,.0f} images/s")
    model_rate = figures["model alone (served inference model)"][0] / figures["model alone (served inference model)"][1]
    loop_rate = figures["plain PyTorch loop (course style)"][0] / figures["plain PyTorch loop (course style)"][1]
    e2e_rate = figures["end to end, first call"][0] / figures["end to end, first call"][1]
    print("-" * 78)
    print(f"model alone / plain loop = {model_rate / loop_rate:.2f}x")
    print(f"model alone {model_rate:,.0f} images/s (target >= 10,000)  {'MET' if model_rate >= 10_000 else 'MISSED'}")
    print(f"end to end  {e2e_rate:,.0f} images/s (target >= 5,000)  {'MET' if e2e_rate >= 5_000 else 'MISSED'}")
    print("=" * 78)


if __name__ == "__main__":
    main()
