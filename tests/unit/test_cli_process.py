"""The `keel` command as a process: what it leaves running when it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]


def _server_child(process: subprocess.Popen, timeout: float = 60) -> psutil.Process:
    """The temporary Prefect API server the command spawned (uvicorn serving Prefect's app)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(process.pid).children():
            try:
                if "prefect.server.api.server:create_app" in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        if process.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail("the keel command never started its temporary Prefect API server")


def test_temporary_prefect_api_dies_with_a_killed_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env["KEEL_HOME"] = str(tmp_path)
    command = [sys.executable, "-m", "cli.main", "predict", "--model", "no-such-model",
               "--input", str(tmp_path / "rows.csv"), "--output", str(tmp_path / "out.parquet")]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = _server_child(process)
    try:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        # The server was started with PR_SET_PDEATHSIG: the kernel signals it when its parent dies.
        server.wait(timeout=15)
    except psutil.TimeoutExpired:
        server.kill()
        pytest.fail("the temporary Prefect API server outlived the killed keel command")
    assert not server.is_running()
