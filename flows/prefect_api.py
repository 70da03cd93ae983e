"""A temporary local Prefect API for one `keel` command, started before Prefect is imported.

With no PREFECT_API_URL, Prefect starts a local API server itself at the first flow call and
waits for it. Started here instead, as the first thing the command does, the server boots on
the second core while this process imports torch, Prefect, MLflow and Great Expectations
(the saving: docs/benchmarks.md). It is the same server Prefect would start: uvicorn serving
prefect.server.api.server:create_app in ephemeral mode, UI off, on a free loopback port, with
two differences: its database is the project's (.keel/prefect/prefect.db, unless PREFECT_HOME is
set), so the runs stay with the project for `keel ui` to show, and its output goes to a log file
there, not to the command's terminal. While `keel ui` runs for the project, no server is started:
the flow runs go to its API (keel.core.ui_links).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from keel.core.errors import KeelError, stop_signal_number
from keel.core.ui_links import links, prefect_home, running_ui, state_dir

if TYPE_CHECKING:  # Prefect is imported by `load`, once the server is started
    from prefect import Flow

P = ParamSpec("P")
T = TypeVar("T")


class TemporaryPrefectAPI:
    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self.log: Path | None = None

    def start(self) -> TemporaryPrefectAPI:
        """Spawns the server unless the environment already names a Prefect API."""
        if os.environ.get("PREFECT_API_URL"):
            return self
        running = running_ui()
        if running is not None and running.get("prefect_api") and _answers(f"{running['prefect_api']}/health"):
            os.environ["PREFECT_API_URL"] = running["prefect_api"]  # `keel ui` serves this project's runs
            return self
        spec = importlib.util.find_spec("prefect")
        if spec is None or not spec.submodule_search_locations:
            return self
        port = free_port()
        app_dir = Path(list(spec.submodule_search_locations)[0]).parent
        self.log = state_dir() / "logs" / "prefect-temporary-api.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            log.write(f"--- pid {os.getpid()}: a temporary Prefect API on port {port}\n".encode())
            self.process = self._spawn(app_dir, port, log)
        self.url = f"http://127.0.0.1:{port}/api"
        return self

    @staticmethod
    def _spawn(app_dir: Path, port: int, log) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "error", "--lifespan", "on"],
            # No telemetry from a throwaway server (and no network to send it on).
            env={"PREFECT_SERVER_ANALYTICS_ENABLED": "false", **os.environ, **_project_database(),
                 "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"},
            # The server dies with this process, even when it is killed with SIGKILL.
            preexec_fn=_die_with_parent(os.getpid()),
            # Its own session: a Ctrl-C or a scheduler's SIGTERM to this command's process group
            # leaves it running while the stopping flow reports its state; `stop` ends it then.
            start_new_session=True,
            # What it says (a traceback from a request cut short as it stops, say) goes to its
            # log, never onto the command's terminal.
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    @contextlib.contextmanager
    def serving(self, timeout: float = 60.0):
        """Runs the block against this server, or against the configured API if a Prefect
        profile names one (then this server is stopped unused)."""
        from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_UI_URL, \
            temporary_settings

        hide_user_error_tracebacks()

        if self.process is None or PREFECT_API_URL.value():
            self.stop()
            yield
            return
        try:
            try:
                wait_for_health(f"{self.url}/health", self.process, timeout)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; its log: {self.log}") from None
            # Heartbeats let a server notice crashed runs; this server ends with the process,
            # and joining the heartbeat thread costs ~1 s at the end of every flow.
            # "View at" links name the address `keel ui` shows this project's runs at (the runs
            # stay in the project's database when this server stops).
            with temporary_settings(updates={PREFECT_API_URL: self.url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
                                             PREFECT_UI_URL: links().prefect}):
                try:
                    yield
                finally:
                    flush_prefect_workers()
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _answers(url: str) -> bool:
    """True when `url` answers 200 within a second (a `keel ui` killed with SIGKILL leaves its
    address book behind, and its pid may be another process's by now)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _project_database() -> dict[str, str]:
    """The temporary server keeps its runs in the project's database (keel.core.ui_links), not
    in the user-wide ~/.prefect one, unless the user set PREFECT_HOME."""
    home = prefect_home()
    if home is None:
        return {}
    home.mkdir(parents=True, exist_ok=True)
    return {"PREFECT_HOME": str(home)}


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_flow(load: Callable[[], Flow[..., T]], **parameters) -> T:
    """Calls the flow that `load()` returns with `parameters` (see loaded_flow)."""
    with loaded_flow(load) as flow:
        return flow(**parameters)


@contextlib.contextmanager
def loaded_flow(load: Callable[[], Flow[P, T]]) -> Iterator[Flow[P, T]]:
    """The flow that `load()` returns, to call in the block against a temporary API that is
    started before `load` imports the flow's module (Prefect, torch, MLflow...): the server
    boots while they load. A stop signal cancels the flow's run (cancel_when_stopped). The
    server stops when the block ends."""
    api = TemporaryPrefectAPI().start()
    try:
        flow = cancel_when_stopped(load())
        with api.serving():
            yield flow
    finally:
        api.stop()


def cancel_when_stopped(flow: Flow[P, T]) -> Flow[P, T]:
    """`flow` whose runs a stop signal (SIGTERM, Ctrl-C) marks Cancelled rather than Crashed.

    Prefect ends a flow run called in-process that a signal interrupts as Crashed, and keeps
    Cancelled for a cancellation its runner delivers. The hook added here runs when the run
    has crashed, while the API is still up: a crash that a stop caused becomes Cancelled
    ("Stopped by SIGTERM."), and so do the task runs it left crashed or unfinished. (Task run
    states reach the API as events: a task run started milliseconds before the signal may not
    be known there yet, and then stays as Prefect leaves it.)"""
    return flow.with_options(on_crashed=[*flow.on_crashed_hooks, mark_stopped_run_cancelled])


def mark_stopped_run_cancelled(flow, flow_run, state) -> None:
    """The on_crashed hook of cancel_when_stopped (its name is what Prefect's log shows)."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId, TaskRunFilterState, \
        TaskRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    # In-process, a Crashed state holds the exception that crashed the run.
    signum = stop_signal_number(state.data if isinstance(state.data, BaseException) else None)
    if signum is None:
        return
    message = f"Stopped by {signal.Signals(signum).name}."
    unfinished = [StateType.CRASHED, StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED, StateType.PAUSED]
    with get_client(sync_client=True) as client:
        for task_run in client.read_task_runs(task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run.id]),
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=unfinished)))):
            client.set_task_run_state(task_run.id, Cancelled(message=message), force=True)
        client.set_flow_run_state(flow_run.id, Cancelled(message=message), force=True)


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to send the child SIGTERM when its parent dies
    (PR_SET_PDEATHSIG); elsewhere None (the server then lives until stopped)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def arm() -> None:
        PR_SET_PDEATHSIG = 1
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork and prctl: then no signal would ever come.
        if os.getppid() != parent:
            os._exit(1)

    return arm


def keel_logs_to_prefect() -> None:
    """Makes the "keel" logger one of Prefect's extra loggers (PREFECT_LOGGING_EXTRA_LOGGERS,
    read when Prefect is imported: the `keel` command calls this first): its records emitted in
    a flow or task run (epoch lines, scoring and validation progress) then go to that run's
    logs on the API, beside Prefect's own."""
    names = [name.strip() for name in os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").split(",") if name.strip()]
    if "keel" not in names:
        os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join([*names, "keel"])
    # A record emitted outside any run (the library called before or after a flow) has no run
    # to go to; it is printed all the same, so no warning about it.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


class _LeaveKeelProgressToKeel(logging.Filter):
    """Keeps the "keel" loggers' progress records (below WARNING) out of Prefect's console
    output: the `keel` command prints them plainly on stdout (cli/main.py), once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not (record.name == "keel" or record.name.startswith("keel."))


class _HideUserErrorTracebacks(logging.Filter):
    """Keeps a user's mistake (a KeelError) out of Prefect's console output: no traceback, no
    repeated "Finished in state Failed" lines. The CLI prints the one sentence; the flow run's
    logs on the Prefect API keep everything (this filter sits on console handlers only)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeelError):
            return False
        if record.levelno >= logging.ERROR or "Failed(" in str(record.msg):
            message = record.getMessage()
            return not any(re.search(rf"\b{name}[:(]", message) for name in _user_error_names())
        return True


def _user_error_names() -> set[str]:
    names, todo = set(), [KeelError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def hide_user_error_tracebacks() -> None:
    """Adds the filters to every console handler Prefect configured (not to its API handler)."""
    from prefect.logging.handlers import APILogHandler

    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                     if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, APILogHandler) \
                    and not any(isinstance(f, _HideUserErrorTracebacks) for f in handler.filters):
                handler.addFilter(_HideUserErrorTracebacks())
                handler.addFilter(_LeaveKeelProgressToKeel())


def flush_prefect_workers() -> None:
    """Sends Prefect's queued logs and events while the server is still up (otherwise they
    retry against a stopped server when the process exits)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def wait_for_health(url: str, process: subprocess.Popen | Callable[[], bool], timeout: float) -> None:
    """Returns once `url` answers 200; raises if the process exits (`process` is a Popen, or a
    callable that says whether it still runs) or `timeout` seconds pass."""
    running = process if callable(process) else (lambda: process.poll() is None)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running():
            raise RuntimeError(f"the server behind {url} exited")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server behind {url} did not answer within {timeout:.0f} s")
