"""Validating all 27,455 Sign-MNIST rows as one incoming batch: suite + drift + anomaly scores.

Prints the time of each part (imports and Data Docs rendering excluded, as the target says)
for three runs in one process. Run: .venv/bin/python benchmarks/validate_sign_mnist.py
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import great_expectations  # noqa: F401  (imports are not part of the target)
    import scipy.stats  # noqa: F401
    import torch

    from keel.core.config import load_dataset_config
    from keel.validation.incoming import validate_batch

    config = load_dataset_config(REPO / "conf" / "datasets" / "sign-mnist.yaml")
    source = str(REPO / "data" / "sign-mnist" / "sign_mnist_train.csv.gz")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(f"{'run':>3}  {'read':>6}  {'profile+AE+drift':>16}  {'GX':>6}  {'quarantine':>10}  {'checks':>7}  {'write':>6}  verdict")
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(1, 4):
            started = time.perf_counter()
            result = validate_batch(config, source, Path(tmp) / f"report-{run}")
            wall = time.perf_counter() - started
            s = result.seconds
            print(f"{run:>3}  {s['read']:6.2f}  {s['prepare']:16.2f}  {s['gx']:6.2f}  {s['quarantine']:10.2f}  "
                  f"{s['checks']:7.2f}  {s['write']:6.2f}  {result.verdict} ({result.quarantined_rows} quarantined); "
                  f"wall with Data Docs {wall:.2f} s")


if __name__ == "__main__":
    main()
