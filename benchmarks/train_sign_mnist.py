"""Benchmark: Keel's training on the full Sign-MNIST data against the course's plain PyTorch loop.

Run it from the repository root:

    .venv/bin/python benchmarks/train_sign_mnist.py                  # everything, default epochs
    .venv/bin/python benchmarks/train_sign_mnist.py --epochs 6 --json /tmp/bench.json
    .venv/bin/python benchmarks/train_sign_mnist.py --skip-flow --skip-course

It measures three things, on this machine, in this order:

1. The Keel flow, cold, exactly as a user runs it: `keel train --fresh --epochs N`
   in a subprocess whose KEEL_HOME is a fresh temporary folder (a copy of conf/ and a link to
   data/sign-mnist/, so an empty MLflow store and no cached dataset version) and whose
   PREFECT_HOME is temporary too. Wall time of the whole subprocess; per-epoch seconds,
   images/s, train_seconds and evaluation accuracy read back from the run's MLflow store.
2. Keel in-process (keel.training.train.fit), scoring the evaluation split after every epoch, for the
   time to 99 % evaluation accuracy (the flow only scores the evaluation split once, at the end).
3. The course's loop (benchmarks/course_loop.py: per-sample transforms, DataLoader batch 32,
   Adam, float32) on the same training rows, for the speed ratio.

Targets: Keel sec/epoch / course sec/epoch <= 0.25, and flow wall time outside the training
loop <= 15 s. Everything temporary lives in one TemporaryDirectory that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for `benchmarks.course_loop` when run as a script

import numpy as np  # noqa: E402
import torch  # noqa: E402

from keel.core.config import TrainConfig, load_dataset_config  # noqa: E402
from keel.data.versions import class_indices  # noqa: E402
from keel.modalities import ingest  # noqa: E402

DATASET_CONFIG = "conf/datasets/sign-mnist.yaml"
EXPERIMENT = "keel-sign-mnist"
TARGET_RATIO = 0.25
TARGET_OUTSIDE_SECONDS = 15.0
TARGET_ACCURACY = 0.99


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs, help="Keel epochs (flow and in-process)")
    parser.add_argument("--course-epochs", type=int, default=2, help="epochs of the course's loop")
    parser.add_argument("--skip-flow", action="store_true", help="skip the Keel flow subprocess")
    parser.add_argument("--skip-course", action="store_true", help="skip the course's loop")
    parser.add_argument("--json", metavar="PATH", help="also write all figures to this JSON file")
    return parser.parse_args()


# --------------------------------------------------------------------------- machine


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu or "unknown", "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": list(os.getloadavg())}


def time_v_figures(output: str) -> dict:
    """What `/usr/bin/time -v` printed into `output`: whole-process wall seconds and peak RSS
    (MB), with `measured_by` set; an empty dict when it printed neither."""
    figures = {}
    for line in output.splitlines():
        name, _, value = line.strip().rpartition(": ")
        if name.startswith("Elapsed (wall clock) time"):
            figures["wall_seconds"] = sum(float(x) * 60 ** i for i, x in enumerate(reversed(value.split(":"))))
            figures["measured_by"] = "/usr/bin/time -v"
        elif name == "Maximum resident set size (kbytes)":
            figures["peak_rss_mb"] = int(value) / 1024
    return figures


class ForeignCpu:
    """CPU seconds that other processes used on this machine during a phase (they skew timings).

    All busy CPU time from /proc/stat minus this process's own and its finished children's.
    """

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float]:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
            busy = (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            busy = float("nan")
        times = os.times()
        return busy, times.user + times.system + times.children_user + times.children_system

    def seconds(self) -> float:
        busy, own = self._snapshot()
        return max(0.0, (busy - self.start[0]) - (own - self.start[1]))


def seconds_to_target(epoch_seconds: list[float], accuracies: list[float], target: float = TARGET_ACCURACY):
    """Cumulative training seconds at the first epoch whose accuracy reaches `target` (None if never)."""
    total = 0.0
    for seconds, accuracy in zip(epoch_seconds, accuracies):
        total += seconds
        if accuracy >= target:
            return total
    return None


# --------------------------------------------------------------------------- 1. the Keel flow


def make_keel_home(folder: Path) -> Path:
    """A fresh KEEL_HOME: a copy of conf/ and a link to the raw Sign-MNIST files, nothing else."""
    home = folder / "keel_home"
    shutil.copytree(REPO / "conf", home / "conf")
    (home / "data").mkdir(parents=True)
    (home / "data" / "sign-mnist").symlink_to(REPO / "data" / "sign-mnist", target_is_directory=True)
    return home


def run_flow(epochs: int, folder: Path, home: Path, label: str) -> dict:
    env = dict(os.environ)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL"):
        env.pop(name, None)
    env.update(KEEL_HOME=str(home), PREFECT_HOME=str(folder / "prefect_home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    command = [str(Path(sys.executable).parent / "keel"), "train", "--fresh", "--epochs", str(epochs),
               "--dataset-config", DATASET_CONFIG]
    log = folder / f"flow-{label}.log"
    print(f"[flow {label}] keel {' '.join(command[1:])}  (KEEL_HOME={home})", flush=True)
    started = time.perf_counter()
    with log.open("w") as out:
        completed = subprocess.run(command, cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    output = log.read_text(errors="replace")
    if completed.returncode != 0:
        print(output[-6000:])
        raise SystemExit(f"[flow] failed with exit status {completed.returncode}")
    # The CLI's own summary is the last lines of its output.
    tail = output.rstrip().splitlines()
    start = max((i for i, line in enumerate(tail) if line.startswith("dataset   ")), default=len(tail) - 8)
    print("\n".join("[flow] " + line for line in tail[start:]), flush=True)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    run = runs[0]

    def history(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]

    epoch_seconds = history("epoch_seconds")
    images_per_second = history("images_per_second")
    train_seconds = run.data.metrics["train_seconds"]
    loop_seconds = run.data.metrics["loop_seconds"]
    return {
        "run_id": run.info.run_id,
        "status": run.info.status,
        "device": run.data.tags.get("keel.device"),
        "precision": run.data.tags.get("keel.precision"),
        "epochs_run": len(epoch_seconds),
        "epoch_seconds": epoch_seconds,
        "images_per_second": images_per_second,
        "val_accuracy": history("val_accuracy"),
        "sec_per_epoch": float(np.mean(epoch_seconds)),
        "mean_images_per_second": float(np.mean(images_per_second)),
        "train_seconds": train_seconds,
        "evaluation_accuracy": run.data.metrics.get("evaluation_accuracy"),
        "wall_seconds": wall,
        "loop_seconds": loop_seconds,
        "outside_loop_seconds": wall - loop_seconds,
    }


# --------------------------------------------------------------------------- 2. Keel in-process


def run_keel_in_process(version, epochs: int) -> dict:
    from keel.data.batches import load_split, training_splits
    from keel.models.device import predict_logits, select_device, select_precision, set_threads
    from keel.training.train import fit

    set_threads()  # as the flow's train stage does
    config = TrainConfig(epochs=epochs)
    device = select_device(config.device)
    precision = select_precision(config.precision, device)
    train, validation = training_splits(version, config, device)
    evaluation = load_split(version, version.indices("evaluation"), device)
    accuracies: list[float] = []

    def score_evaluation(epoch: int, metrics: dict, model) -> None:
        predictions = predict_logits(model, evaluation.images, device, precision).argmax(1)
        accuracies.append((predictions == evaluation.targets).float().mean().item())
        print(f"[keel] epoch {epoch}: {metrics['epoch_seconds']:.1f} s, {metrics['images_per_second']:.0f} images/s, "
              f"val acc {metrics['val_accuracy']:.4f}, eval acc {accuracies[-1]:.4f}", flush=True)

    result = fit(train, validation, len(version.meta["labels"]), config, on_epoch_end=score_evaluation, progress=False)
    epoch_seconds = [row["epoch_seconds"] for row in result.history]
    return {
        "device": result.device,
        "precision": result.precision,
        "epochs_run": result.epochs_run,
        "epoch_seconds": epoch_seconds,
        "images_per_second": [row["images_per_second"] for row in result.history],
        "eval_accuracy": accuracies,
        "sec_per_epoch": float(np.mean(epoch_seconds)),
        "mean_images_per_second": float(np.mean([row["images_per_second"] for row in result.history])),
        "train_seconds": result.train_seconds,
        "seconds_to_99": seconds_to_target(epoch_seconds, accuracies),
    }


# --------------------------------------------------------------------------- 3. the course's loop


def run_course(version, epochs: int) -> dict:
    from benchmarks.course_loop import run_course_loop

    labels = version.meta["labels"]
    images = np.asarray(version.images())
    all_labels = version.labels()
    train_idx, eval_idx = np.sort(version.indices("train")), np.sort(version.indices("evaluation"))

    history = run_course_loop(images[train_idx], class_indices(all_labels[train_idx], labels),
                              images[eval_idx], class_indices(all_labels[eval_idx], labels),
                              len(labels), epochs)
    for row in history:
        print(f"[course] epoch {row['epoch']}: {row['seconds']:.1f} s, {row['images_per_second']:.0f} images/s, "
              f"eval acc {row['eval_accuracy']:.4f}", flush=True)
    epoch_seconds = [row["seconds"] for row in history]
    accuracies = [row["eval_accuracy"] for row in history]
    return {
        "epochs_run": len(history),
        "epoch_seconds": epoch_seconds,
        "images_per_second": [row["images_per_second"] for row in history],
        "eval_accuracy": accuracies,
        "sec_per_epoch": float(np.mean(epoch_seconds)),
        "mean_images_per_second": float(np.mean([row["images_per_second"] for row in history])),
        "final_eval_accuracy": accuracies[-1],
        "seconds_to_99": seconds_to_target(epoch_seconds, accuracies),
    }


# --------------------------------------------------------------------------- report


def fmt(value, spec: str = ".1f", unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:{spec}}{unit}"


def report(figures: dict) -> str:
    m, flow, keel, course = figures["machine"], figures.get("flow"), figures.get("keel"), figures.get("course")
    lines = [
        "",
        "=" * 78,
        f"Sign-MNIST training benchmark  (Keel epochs {figures['epochs']}, course epochs {figures['course_epochs']})",
        f"machine: {m['cpu']}, os.cpu_count()={m['cpu_count']}, torch {m['torch']}, "
        f"torch.get_num_threads()={m['torch_threads']}" + (f", GPU {m['cuda']}" if m["cuda"] else ""),
        f"load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in figures['load_before'])}; "
        f"after: {', '.join(f'{x:.2f}' for x in m['load_average'])}  (other processes skew timings)",
        "-" * 78,
    ]
    for label in ("flow_cold", "flow_warm"):
        flow = figures.get(label)
        if not flow:
            continue
        kind = ("cold: new MLflow store, dataset not yet ingested" if label == "flow_cold"
                else "warm: same home again, --fresh run")
        lines += [
            f"Keel flow, `keel train` in a subprocess ({kind})",
            f"  {flow['device']}, {flow['precision']}, {flow['epochs_run']} epochs",
            f"  sec/epoch            {fmt(flow['sec_per_epoch'], '.2f', ' s')}",
            f"  images/s             {fmt(flow['mean_images_per_second'], '.0f')}",
            f"  evaluation accuracy  {fmt(flow['evaluation_accuracy'], '.4f')}",
            f"  wall total           {fmt(flow['wall_seconds'], '.1f', ' s')}  (training loop {flow['loop_seconds']:.1f} s, "
            f"of which training passes {flow['train_seconds']:.1f} s)",
            f"  outside the loop     {fmt(flow['outside_loop_seconds'], '.1f', ' s')}",
            f"  CPU used by other processes meanwhile  {fmt(flow.get('foreign_cpu_seconds'), '.1f', ' s')}",
        ]
    if keel:
        lines += [
            f"Keel in-process ({keel['device']}, {keel['precision']}, {keel['epochs_run']} epochs)",
            f"  sec/epoch            {fmt(keel['sec_per_epoch'], '.2f', ' s')}",
            f"  images/s             {fmt(keel['mean_images_per_second'], '.0f')}",
            f"  eval acc per epoch   {', '.join(f'{a:.4f}' for a in keel['eval_accuracy'])}",
            f"  time to 99 % eval    {fmt(keel['seconds_to_99'], '.1f', ' s') if keel['seconds_to_99'] is not None else 'not reached'}",
            f"  CPU used by other processes meanwhile  {fmt(keel.get('foreign_cpu_seconds'), '.1f', ' s')}",
        ]
    if course:
        lines += [
            f"Course loop (cpu, fp32, batch 32, {course['epochs_run']} epochs)",
            f"  sec/epoch            {fmt(course['sec_per_epoch'], '.2f', ' s')}",
            f"  images/s             {fmt(course['mean_images_per_second'], '.0f')}",
            f"  eval accuracy        {fmt(course['final_eval_accuracy'], '.4f')}  (after last epoch)",
            f"  time to 99 % eval    {fmt(course['seconds_to_99'], '.1f', ' s') if course['seconds_to_99'] is not None else 'not reached'}",
            f"  CPU used by other processes meanwhile  {fmt(course.get('foreign_cpu_seconds'), '.1f', ' s')}",
        ]
    lines.append("-" * 78)
    ratio = figures.get("ratio")
    if ratio is not None:
        lines.append(f"RATIO keel sec/epoch / course sec/epoch = {ratio:.3f}  (target <= {TARGET_RATIO})  "
                     f"{'MET' if ratio <= TARGET_RATIO else 'MISSED'}"
                     f"  [keel figure from the {figures['ratio_keel_source']}]")
    for label in ("flow_cold", "flow_warm"):
        if figures.get(label):
            outside = figures[label]["outside_loop_seconds"]
            lines.append(f"outside-loop seconds ({label.split('_')[1]}) = {outside:.1f} s  (target <= {TARGET_OUTSIDE_SECONDS:.0f} s)  "
                         f"{'MET' if outside <= TARGET_OUTSIDE_SECONDS else 'MISSED'}")
    lines.append("=" * 78)
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    figures: dict = {"epochs": args.epochs, "course_epochs": args.course_epochs, "load_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        folder = Path(tmp)
        if not args.skip_flow:
            home = make_keel_home(folder)
            for label in ("cold", "warm"):
                foreign = ForeignCpu()
                figures[f"flow_{label}"] = run_flow(args.epochs, folder, home, label)
                figures[f"flow_{label}"]["foreign_cpu_seconds"] = foreign.seconds()

        # The in-process runs reuse the flow's dataset version when there is one (same temp folder).
        versions = folder / "keel_home" / "data" / "versions"
        version = ingest(load_dataset_config(REPO / DATASET_CONFIG), root=versions).version
        figures["dataset_version"] = version.id
        foreign = ForeignCpu()
        figures["keel"] = run_keel_in_process(version, args.epochs)
        figures["keel"]["foreign_cpu_seconds"] = foreign.seconds()
        if not args.skip_course:
            foreign = ForeignCpu()
            figures["course"] = run_course(version, args.course_epochs)
            figures["course"]["foreign_cpu_seconds"] = foreign.seconds()
        del version

    figures["machine"] = machine()
    if "course" in figures:
        source = "flow_warm" if "flow_warm" in figures else "keel"
        figures["ratio_keel_source"] = "warm flow run" if source == "flow_warm" else "in-process run"
        figures["ratio"] = figures[source]["sec_per_epoch"] / figures["course"]["sec_per_epoch"]
    print(report(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
