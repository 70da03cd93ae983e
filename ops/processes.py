"""The team stack's process supervisor: start a service detached, tell whether it still runs,
stop exactly it and what it started. psutil, so that it works wherever psutil does (Linux,
macOS), not only where /proc can be read.

A service is recorded by pid and start time (psutil's create_time, seconds since the epoch):
a pid the system gave to another process since is not that service, and is left alone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from flows.prefect_api import wait_for_health
from keel.core.errors import KeelError
from ops.credentials import read_env_file
from ops.settings import PROJECT_DIR


@dataclass
class Service:
    """One process the stack started."""

    name: str
    argv: list[str]
    log: str
    env: dict = field(default_factory=dict)  # added to the inherited environment (None: removed)
    # 0600 KEY=value files whose values are added too (before `env`): secrets stay out of stack.json.
    env_files: list[str] = field(default_factory=list)
    pid: int | None = None
    # When the process started (psutil create_time): tells a reused pid apart. An int is the
    # clock ticks since boot that Keel recorded before psutil (Linux), still understood.
    start_time: float | None = None
    health: str | None = None


def service_environment(service: Service) -> dict[str, str]:
    """The environment `service` runs with: the inherited one, the values of its env files,
    then its own `env` (None there means: not inherited)."""
    env = dict(os.environ)
    for path in service.env_files:
        env.update(read_env_file(Path(path)))
    env.update(service.env)
    return {k: v for k, v in env.items() if v is not None}


def spawn(service: Service) -> None:
    env = service_environment(service)
    Path(service.log).parent.mkdir(parents=True, exist_ok=True)
    with open(service.log, "ab") as log:
        # A new session per service: its process group holds it and what it forks.
        process = subprocess.Popen(service.argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=PROJECT_DIR)
    service.pid = process.pid
    service.start_time = psutil.Process(process.pid).create_time()


def _process(service: Service) -> psutil.Process | None:
    """The recorded process while it runs: the same process (start time), not a zombie."""
    if service.pid is None or service.start_time is None:
        return None
    try:
        process = psutil.Process(service.pid)
        if not _started_at(process, service.start_time):
            return None
    except psutil.Error:
        return None
    return process if running(process) else None


def _started_at(process: psutil.Process, recorded: float) -> bool:
    started = process.create_time()
    if isinstance(recorded, int):  # clock ticks since boot, as recorded before psutil (Linux)
        return abs((started - psutil.boot_time()) * os.sysconf("SC_CLK_TCK") - recorded) < 1.5
    return abs(started - recorded) < 0.01


def running(process: psutil.Process | int) -> bool:
    """True while `process` (or pid) exists and is not a zombie."""
    try:
        process = process if isinstance(process, psutil.Process) else psutil.Process(process)
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def alive(service: Service) -> bool:
    """True while the recorded process runs (the same process, not a reused pid)."""
    return _process(service) is not None


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children...)."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def stop(service: Service, timeout: float = 20.0) -> bool:
    """SIGTERM to the service's process group and to its descendants in other groups (a
    worker's flow runs get their own session), then SIGKILL after `timeout`. Returns False
    when the recorded process was already gone."""
    process = _process(service)
    if process is None:
        return False
    group = _group_of(process) or process.pid  # spawn made it a group leader
    below = _children(process)
    others = [p for p in below if _group_of(p) not in (None, group)]
    _signal_group(group, signal.SIGTERM)
    _signal_each(others, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(running(p) for p in [process, *below]):
        time.sleep(0.2)
    _signal_group(group, signal.SIGKILL)
    _signal_each(others, signal.SIGKILL)
    _reap(process.pid)
    return True


def kill_hard(service: Service) -> None:
    """SIGKILL the service and everything it started, at once: a machine that dies."""
    process = _process(service)
    if process is None:
        return
    below = _children(process)
    _signal_group(_group_of(process) or process.pid, signal.SIGKILL)
    _signal_each(below, signal.SIGKILL)
    _reap(process.pid)


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def _group_of(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except OSError:
        return None


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_each(processes: list[psutil.Process], sig: int) -> None:
    for process in processes:
        try:
            process.send_signal(sig)  # psutil checks first that the pid is still this process
        except psutil.Error:
            pass


def _reap(pid: int) -> None:
    """Collects the exit status when we are the parent (tests start stacks in-process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_healthy(service: Service, timeout: float) -> None:
    try:
        wait_for_health(service.health, lambda: alive(service), timeout)
    except RuntimeError as exc:
        raise KeelError(f"{service.name}: {exc}; see {service.log}") from None
