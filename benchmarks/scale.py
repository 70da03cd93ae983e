"""Benchmark: Keel past one machine's memory (issue 15), as whole processes, in one run.

Run it from the repository root, on a quiet machine (nothing else heavy running):

    .venv/bin/python benchmarks/scale.py                      # everything: 1x, 10x, 40x Sign-MNIST
    .venv/bin/python benchmarks/scale.py --sizes 1,10 --skip-ddp --json /tmp/scale.json

In a temporary KEEL_HOME (a copy of conf/ and a link to data/sign-mnist/) it trains and
registers the default model for one epoch (`keel train --epochs 1`) and infers the dataset's
validation suite (`keel validate profile --epochs 1`), builds gzip CSVs of 1x, 10x and 40x the
Sign-MNIST training file (27,455, 274,550 and 1,098,200 rows), then measures, each as a
subprocess under `/usr/bin/time -v` (wall seconds and peak resident memory):

1. `keel predict` on each size (streaming: memory should not grow with the rows), and beside
   it the ratio's denominator: a plain single-process job of the design Keel had before
   (`--plain`: pandas reads the whole file, the same verified model scores every row in one
   go, pandas writes the whole output);
2. `keel validate` on each size;
3. a folder of 20 copies of the 1x file: `keel predict --workers 1` and `--workers 2` (Dask
   parts), and the single-output `keel predict` on the same folder;
4. the idempotent re-run of `keel predict` on the 1x file (three times: the median);
5. one epoch of data-parallel training with 1 and 2 processes on the CPU (gloo):
   benchmarks/ddp.py, run as a subprocess.

Targets (2 cores): peak memory under 1.5 GB for every size; the no-op re-run <= 3 s; a full
`keel predict` of 27,455 rows <= 8 s as a whole process.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for `benchmarks.*` when run as a script

from benchmarks.text import environment, timed_process  # noqa: E402
from benchmarks.train_sign_mnist import machine, make_keel_home  # noqa: E402

CSV = REPO / "data" / "sign-mnist" / "sign_mnist_train.csv.gz"
MODEL = "keel-sign-mnist"
TARGETS = {"peak_rss_mb": 1536.0, "noop_seconds": 3.0, "predict_1x_seconds": 8.0}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,40", help="copies of the Sign-MNIST file per input (comma separated)")
    parser.add_argument("--folder-files", type=int, default=20, help="files in the many-files folder")
    parser.add_argument("--skip-ddp", action="store_true", help="leave out the data-parallel training figures")
    parser.add_argument("--skip-validate", action="store_true", help="leave out `keel validate`")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--plain", nargs=2, metavar=("INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    return parser.parse_args()


def keel(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "keel"), *args]


def run(label: str, command: list[str], folder: Path, home: Path, ok: tuple[int, ...] = (0,)) -> dict:
    """`command` under /usr/bin/time -v in `home`; its figures (the output kept in a log file)."""
    log = folder / "logs" / f"{label.replace(' ', '_').replace('/', '_')}.log"
    log.parent.mkdir(exist_ok=True)
    figures = timed_process(command, environment(folder, home), home, log)
    output = figures.pop("output")
    if figures["returncode"] not in ok:
        print(output[-4000:])
        raise SystemExit(f"[{label}] failed with exit status {figures['returncode']}")
    print(f"[{label}] {figures['wall_seconds']:.2f} s, peak {figures.get('peak_rss_mb') or 0:,.0f} MB", flush=True)
    return {"label": label, "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(command)),
            **figures}


def repeated_csv(copies: int, target: Path) -> Path:
    """The Sign-MNIST training CSV `copies` times over (one header), gzip level 1, built as a stream."""
    if copies == 1:
        return CSV
    with gzip.open(CSV, "rb") as source:
        header = source.readline()
        body = source.read()
    with gzip.open(target, "wb", compresslevel=1) as out:
        out.write(header)
        for _ in range(copies):
            out.write(body)
    return target


def plain_job(input_path: str, output: str) -> None:
    """The denominator: today's design in one process, the whole file in memory at each step."""
    import numpy as np
    import pandas as pd
    import torch

    from keel.serving.pyfunc import load_verified_model

    classifier = load_verified_model(f"models:/{MODEL}@champion")
    frame = pd.read_csv(input_path)
    pixels = frame[[c for c in frame.columns if c.startswith("pixel")]].to_numpy(dtype=np.uint8)
    images = torch.from_numpy(pixels.reshape(-1, 1, 28, 28))
    probabilities = classifier.probabilities(images, 1024).cpu().numpy()
    names = np.asarray(classifier.config["class_names"])
    pd.DataFrame({"row": np.arange(1, len(frame) + 1), "class_name": names[probabilities.argmax(1)],
                  "confidence": probabilities.max(1)}).to_parquet(output, index=False)


def scoring_and_validation(folder: Path, home: Path, sizes: list[int], validate: bool) -> list[dict]:
    rows = []
    for copies in sizes:
        source = repeated_csv(copies, folder / f"sign_mnist_x{copies}.csv.gz")
        out = folder / "scored"
        rows.append(run(f"keel predict {copies}x", keel("predict", "--model", MODEL, "--input", str(source), "--output",
                                                        str(out / f"x{copies}.parquet"), "--force"), folder, home) | {"copies": copies})
        rows.append(run(f"plain job {copies}x", [sys.executable, str(Path(__file__).resolve()), "--plain", str(source),
                                                 str(out / f"plain_x{copies}.parquet")], folder, home) | {"copies": copies})
        if validate:
            rows.append(run(f"keel validate {copies}x", keel("validate", "--dataset", "sign-mnist", "--input", str(source),
                                                             "--report", str(folder / "reports" / f"x{copies}")),
                            folder, home, ok=(0, 1)) | {"copies": copies})
    return rows


def many_files(folder: Path, home: Path, files: int) -> list[dict]:
    landing = folder / "landing"
    landing.mkdir()
    for i in range(files):
        shutil.copyfile(CSV, landing / f"part-{i:02d}.csv.gz")
    rows = [run(f"keel predict folder of {files}, one output", keel("predict", "--model", MODEL, "--input", str(landing),
                                                                     "--output", str(folder / "folder.parquet")), folder, home)]
    for workers in (1, 2):
        rows.append(run(f"keel predict folder of {files}, --workers {workers}",
                        keel("predict", "--model", MODEL, "--input", str(landing), "--output",
                             str(folder / f"parts-{workers}"), "--workers", str(workers)), folder, home))
    return rows


def no_op(folder: Path, home: Path) -> dict:
    command = keel("predict", "--model", MODEL, "--input", str(CSV), "--output", str(folder / "scored" / "x1.parquet"))
    runs = [run(f"keel predict no-op re-run #{i + 1}", command, folder, home) for i in range(3)]
    median = statistics.median(r["wall_seconds"] for r in runs)
    return {"label": "keel predict no-op re-run (median of 3)", "wall_seconds": median,
            "peak_rss_mb": max(r.get("peak_rss_mb") or 0 for r in runs), "runs": runs}


def ddp(folder: Path) -> dict:
    """benchmarks/ddp.py's figures (it prints a table and writes JSON)."""
    out = folder / "ddp.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ddp.py"), "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True)
    print(done.stdout[-3000:], flush=True)
    if done.returncode != 0:
        print(done.stderr[-3000:])
        return {"error": f"benchmarks/ddp.py exited {done.returncode}"}
    return json.loads(out.read_text())


def report(figures: dict) -> str:
    lines = ["| what | wall s | peak MB | rows/s |", "|---|---:|---:|---:|"]
    for row in figures["runs"]:
        rows = 27_455 * row.get("copies", 0)
        rate = f"{rows / row['wall_seconds']:,.0f}" if rows else ""
        lines.append(f"| {row['label']} | {row['wall_seconds']:.2f} | {row.get('peak_rss_mb') or 0:,.0f} | {rate} |")
    plain = {r["copies"]: r for r in figures["runs"] if r["label"].startswith("plain job")}
    for row in figures["runs"]:
        if row["label"].startswith("keel predict") and row.get("copies") in plain:
            base = plain[row["copies"]]
            lines.append(f"\n{row['label']}: wall {row['wall_seconds'] / base['wall_seconds']:.2f}x the plain job's, "
                         f"peak memory {(row.get('peak_rss_mb') or 0) / (base.get('peak_rss_mb') or 1):.2f}x")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    if args.plain:
        plain_job(*args.plain)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="keel-scale-bench-") as tmp:
        folder = Path(tmp)
        home = make_keel_home(folder)
        figures = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": []}
        figures["train"] = run("keel train --epochs 1", keel("train", "--epochs", "1"), folder, home)
        if not args.skip_validate:
            figures["profile"] = run("keel validate profile", keel("validate", "profile", "--dataset", "sign-mnist",
                                                                   "--epochs", "1"), folder, home)
        figures["runs"] += scoring_and_validation(folder, home, sizes, not args.skip_validate)
        figures["runs"] += many_files(folder, home, args.folder_files)
        figures["runs"].append(no_op(folder, home))
        if not args.skip_ddp:
            figures["ddp"] = ddp(folder)
    text = report(figures)
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
