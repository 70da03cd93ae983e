"""Team stack figures: start-up time, memory of each service, and the per-flow overhead of a
training run through a deployment (team mode) against the same run embedded (`keel train`).

    .venv/bin/python benchmarks/team_stack.py [--epochs 1] [--repeats 2]

Starts its own stack (`keel stack` code: PostgreSQL when it answers, free loopback ports, its
own databases, dropped at the end) in a temporary KEEL_HOME and stops every process it started.
Overhead = wall time of the whole flow run minus its training loop (the `loop_seconds` metric):
what orchestration, tracking and process start-up cost around the same work.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ops.postgres import drop_database  # noqa: E402
from ops.processes import descendants  # noqa: E402
from ops.stack import Stack, StackSettings  # noqa: E402

CONFIG = "conf/datasets/sign-mnist.yaml"


def rss_mb(pid: int) -> float:
    """Resident memory of a process and everything below it, in MB."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def memory(stack: Stack) -> dict[str, float]:
    return {s.name: rss_mb(s.pid) for s in stack.services}


def embedded_run(home: Path, epochs: int) -> tuple[float, float]:
    """(wall seconds, training-loop seconds) of one `keel train` process, embedded mode."""
    env = {**os.environ, "KEEL_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    started = time.perf_counter()
    done = subprocess.run([str(REPO / ".venv" / "bin" / "keel"), "train", "--dataset-config", CONFIG,
                           "--epochs", str(epochs), "--floor", "0", "--fresh"],
                          cwd=REPO, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    loop = float(re.search(r"\) in ([\d.]+) s on", done.stdout).group(1))
    return wall, loop


def team_run(stack: Stack, epochs: int) -> tuple[float, float, float]:
    """(wall seconds from the request to Completed, loop seconds, seconds queued before the
    flow started) of one run of the training deployment."""
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    started = time.perf_counter()
    flow_run = run_deployment("keel-training/weekly-retraining", timeout=0, parameters={
        "dataset_config": CONFIG, "fresh": True, "train": {"epochs": epochs}, "promotion": {"floor": 0.0}})
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run.id)
            if flow_run.state.is_final():
                break
            time.sleep(0.2)
    wall = time.perf_counter() - started
    assert flow_run.state.is_completed(), flow_run.state
    queued = (flow_run.start_time - flow_run.created).total_seconds()
    mlflow = MlflowClient(stack.mlflow_url)
    runs = mlflow.search_runs([e.experiment_id for e in mlflow.search_experiments()], order_by=["attributes.start_time DESC"],
                              max_results=1)
    return wall, runs[0].data.metrics["loop_seconds"], queued


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="keel-bench-team-"))
    home = root / "home"
    home.mkdir()
    os.environ["KEEL_HOME"] = str(home)
    prefix = f"keel_bench_{uuid.uuid4().hex[:6]}"
    settings = StackSettings.from_env(stack_dir=root / "stack", db_prefix=prefix, prefect_port=0, mlflow_port=0)
    print(f"machine: {os.cpu_count()} CPUs; epochs {args.epochs}; repeats {args.repeats}")

    embedded_run(home, args.epochs)  # warm-up: ingests the dataset version both modes then reuse
    stack = Stack(settings)
    try:
        stack.up()
        up_total = stack.seconds_to_ready
        credentials = stack.credentials()  # both servers require them
        os.environ.update({**stack.client_env(), **credentials})
        time.sleep(10)
        idle = memory(stack)
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        rows = []
        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api_url,
                                         PREFECT_API_AUTH_STRING: credentials["PREFECT_API_AUTH_STRING"]}):
            team_run(stack, args.epochs)  # warm-up of the team path (first MLflow experiment, caches)
            for _ in range(args.repeats):
                wall, loop, queued = team_run(stack, args.epochs)
                rows.append(("team", wall, loop, queued))
                os.environ.pop("PREFECT_API_URL")
                mlflow_uri = os.environ.pop("MLFLOW_TRACKING_URI")
                wall, loop = embedded_run(home, args.epochs)
                rows.append(("embedded", wall, loop, 0.0))
                os.environ.update({"PREFECT_API_URL": stack.prefect_api_url, "MLFLOW_TRACKING_URI": mlflow_uri})
            busy = memory(stack)
    finally:
        stack.down()
        for name in (f"{prefix}_prefect", f"{prefix}_mlflow"):
            try:
                drop_database(settings.postgres, name)
            except Exception:  # noqa: BLE001  (SQLite fallback: nothing to drop)
                pass

    print(f"\nstack start-up ({stack.database}): {up_total:.1f} s to all services healthy, workers online, "
          "prefect.yaml deployed and the watcher started")
    print("\nmemory (RSS of each process tree, MB):  idle after start-up / after the training runs")
    for name in idle:
        print(f"  {name:15} {idle[name]:7.0f} / {busy.get(name, 0):7.0f}")
    print("\ntraining run (sign-mnist, %d epoch(s)): wall, training loop, overhead = wall - loop" % args.epochs)
    for mode, wall, loop, queued in rows:
        extra = f" (of which {queued:.1f} s queued until a worker picked it up)" if mode == "team" else ""
        print(f"  {mode:9} wall {wall:6.1f} s  loop {loop:5.1f} s  overhead {wall - loop:5.1f} s{extra}")
    team = [w - lo for m, w, lo, _ in rows if m == "team"]
    embedded = [w - lo for m, w, lo, _ in rows if m == "embedded"]
    print(f"\nmean overhead: team {sum(team) / len(team):.1f} s, embedded {sum(embedded) / len(embedded):.1f} s, "
          f"ratio team/embedded {sum(team) / sum(embedded):.2f}")


if __name__ == "__main__":
    main()
