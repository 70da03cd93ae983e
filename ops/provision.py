"""The team stack's objects on a Prefect server: work pools, the crash-detection automation,
and the deployments of prefect.yaml.

Prefect's client, schemas and automations are imported where they are used: they take about a
second to import, which `keel stack down` and `keel stack status` do not need.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from keel.core.errors import KeelError
from ops.settings import CRASH_AUTOMATION, POOLS, PROJECT_DIR



def provision(api_url: str, crash_after_seconds: int, auth_string: str | None = None) -> None:
    """The work pools and the crash-detection automation on the Prefect server at `api_url`
    (`auth_string`: its PREFECT_API_AUTH_STRING; None: the one Prefect's settings hold)."""
    with prefect_client(api_url, auth_string) as client:  # also points Prefect's own API calls at api_url
        create_pools(client)
        create_crash_automation(crash_after_seconds)


def deploy_project(env: dict[str, str], log: Path | None = None) -> None:
    """Runs `prefect --no-prompt deploy --all` on the project's prefect.yaml with `env` added
    to the environment (PREFECT_API_URL names the server; a None value removes a variable)."""
    env = {**os.environ, "KEEL_PROJECT_DIR": str(PROJECT_DIR), **env}
    env = {k: v for k, v in env.items() if v is not None}
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
    if log is None:
        done = subprocess.run(command, cwd=PROJECT_DIR, env=env, timeout=300, check=False)
    else:
        with open(log, "ab") as handle:
            done = subprocess.run(command, cwd=PROJECT_DIR, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                  timeout=300, check=False)
    if done.returncode != 0:
        raise KeelError(f"prefect deploy --all failed (exit {done.returncode})" + (f"; see {log}" if log else ""))


def prefect_client(api_url: str, auth_string: str | None = None):
    """A synchronous Prefect client for `api_url` (with `auth_string` when given)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    updates = {PREFECT_API_URL: api_url}
    if auth_string is not None:
        updates[PREFECT_API_AUTH_STRING] = auth_string

    @contextlib.contextmanager
    def opened():
        with temporary_settings(updates=updates):
            with get_client(sync_client=True) as client:
                yield client

    return opened()


def create_pools(client) -> None:
    """The `process` work pools with their concurrency limits (updated when they exist)."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    for name, limit in POOLS.items():
        try:
            client.create_work_pool(WorkPoolCreate(
                name=name, type="process", concurrency_limit=limit,
                base_job_template=ProcessWorker.get_default_base_job_template(),
                description="Keel training (one run per GPU)" if name == "gpu" else "Keel scoring and validation"))
        except ObjectAlreadyExists:
            client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=limit))


def create_crash_automation(crash_after_seconds: int) -> None:
    """Marks a flow run crashed when its heartbeats stop (its worker or machine died), as
    Prefect's zombie-flow guide describes; replaces an older copy."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        Automation.read(name=CRASH_AUTOMATION).delete()
    except ValueError:
        pass
    Automation(
        name=CRASH_AUTOMATION,
        description="A flow run that stops sending heartbeats lost its process: mark it Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=crash_after_seconds),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {crash_after_seconds} s: its worker or machine died")],
    ).create()
