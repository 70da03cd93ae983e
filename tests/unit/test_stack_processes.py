"""`keel stack` stops exactly what it started: by recorded pid and kernel start time, with the
children a service forked into other sessions (as a worker's flow runs are)."""

import sys
import time

from ops.stack import Service, _pid_alive, alive, descendants, spawn, stop

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
    assert not _pid_alive(child)  # the child in its own session went too
    assert not stop(service)  # already gone: nothing to do


def test_a_reused_pid_is_left_alone(tmp_path):
    service = Service("demo", [sys.executable, "-c", "import time; time.sleep(60)"], str(tmp_path / "demo.log"))
    spawn(service)
    impostor = Service("demo", service.argv, service.log, pid=service.pid, start_time=service.start_time + 1)
    assert not alive(impostor)
    assert not stop(impostor)  # the recorded process is not this one: not signalled
    assert alive(service)
    assert stop(service, timeout=5)
