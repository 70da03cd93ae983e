"""`keel train` as a process whose output goes to a pipe (a log file, CI, `make run | tee`): its
epoch line is printed once, plainly on stdout (not again by Prefect's console handler on
stderr), and reaches the flow run's logs on the Prefect API (the "keel" logger is one of
Prefect's extra loggers)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.component.test_epoch_lines import EPOCH_LINE
from tests.conftest import REPO


def _flow_run_logs(dataset_config: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        run = next(r for r in client.read_flow_runs() if r.parameters.get("dataset_config") == dataset_config)
        return client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))


def test_the_epoch_line_is_printed_once_and_kept_in_the_flow_runs_logs(keel_home, small_config):
    from prefect.settings import PREFECT_API_URL

    config = str(small_config)
    env = {**os.environ, "KEEL_HOME": str(keel_home), "PREFECT_API_URL": PREFECT_API_URL.value()}
    env.pop("PREFECT_LOGGING_EXTRA_LOGGERS", None)  # the command names "keel" itself
    done = subprocess.run([sys.executable, "-m", "cli.main", "train", "--dataset-config", config, "--epochs", "1",
                           "--batch-size", "64", "--time-budget", "0", "--floor", "0"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, out[-3000:] + err[-3000:]
    printed = [line for line in out.splitlines() if EPOCH_LINE.fullmatch(line)]
    assert len(printed) == 1 and printed[0].startswith("epoch 1/1  "), out[-3000:]
    assert "epoch 1/1" not in err, err[-3000:]  # not a second time through Prefect's console handler

    logs = _flow_run_logs(config)  # the command drained its logs to the API before it exited
    epochs = [log for log in logs if "epoch 1/1" in log.message]  # once: as the "keel.training" logger's record
    assert [(log.name, log.message) for log in epochs] == [("keel.training", printed[0])], \
        [f"{log.name}: {log.message}" for log in logs]
    assert epochs[0].task_run_id is not None  # emitted in the training task: its logs show it too
