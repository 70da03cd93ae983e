"""`keel stack` stops exactly what it started: by recorded pid and kernel start time, with the
children a service forked into other sessions (as a worker's flow runs are)."""

import sys
import time
from pathlib import Path

import pytest

from ops.processes import Service, alive, descendants, kill_hard, running, spawn, stop

# A parent that starts a child in its own session (like a Prefect worker's flow-run process).
PARENT = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
time.sleep(120)
"""


def _children(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while not descendants(pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return descendants(pid)


def test_stop_ends_the_service_and_what_it_started(tmp_path):
    service = Service("demo", [sys.executable, "-c", PARENT], str(tmp_path / "demo.log"))
    spawn(service)
    child = _children(service.pid)[0]
    assert alive(service)
    assert stop(service, timeout=5)
    assert not alive(service)
    assert not running(child)  # the child in its own session went too
    assert not stop(service)  # already gone: nothing to do


def test_a_reused_pid_is_left_alone(tmp_path):
    service = Service("demo", [sys.executable, "-c", "import time; time.sleep(60)"], str(tmp_path / "demo.log"))
    spawn(service)
    impostor = Service("demo", service.argv, service.log, pid=service.pid, start_time=service.start_time + 1)
    assert not alive(impostor)
    assert not stop(impostor)  # the recorded process is not this one: not signalled
    assert alive(service)
    assert stop(service, timeout=5)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start times in clock ticks were recorded on Linux only")
def test_a_stack_recorded_before_psutil_is_still_recognised_and_stopped(tmp_path):
    """stack.json written by an older Keel holds the kernel's start time in clock ticks since
    boot (/proc/PID/stat field 22): `keel stack down` after an upgrade still stops that stack."""
    service = Service("demo", [sys.executable, "-c", "import time; time.sleep(60)"], str(tmp_path / "demo.log"))
    spawn(service)
    ticks = int(Path(f"/proc/{service.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    recorded = Service("demo", service.argv, service.log, pid=service.pid, start_time=ticks)
    assert alive(recorded)
    assert not alive(Service("demo", service.argv, service.log, pid=service.pid, start_time=ticks + 100))
    assert stop(recorded, timeout=5)
    assert not alive(service)


def test_kill_hard_ends_the_service_and_what_it_started_at_once(tmp_path):
    service = Service("demo", [sys.executable, "-c", PARENT], str(tmp_path / "demo.log"))
    spawn(service)
    child = _children(service.pid)[0]
    started = time.monotonic()
    kill_hard(service)
    while (alive(service) or running(child)) and time.monotonic() - started < 5:
        time.sleep(0.05)
    assert not alive(service) and not running(child)
