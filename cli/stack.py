"""`keel stack up|down|status|deploy`: the team stack as local processes (ops/)."""

from __future__ import annotations

import argparse
import os

from keel.core.errors import KeelError


def stack(args: argparse.Namespace) -> int:
    # ops/ here, not at the top: psutil, psycopg2 and python-dotenv would add ~0.1 s to `keel --help`.
    from ops.processes import alive
    from ops.provision import deploy_project, provision
    from ops.stack import Stack, StackSettings

    settings = StackSettings.from_env(deploy=not args.no_deploy)
    if args.action == "up":
        print(Stack(settings).up().describe())
    elif args.action == "down":
        stopped = Stack.load(settings.stack_dir).down()
        print(f"stopped {', '.join(stopped) if stopped else 'nothing (the recorded processes had already exited)'}")
    elif args.action == "status":
        running = Stack.load(settings.stack_dir)
        print(running.describe())
        for service in running.services:
            print(f"  {service.name:14} {'running' if alive(service) else 'NOT RUNNING'}")
        return 0 if all(alive(s) for s in running.services) else 1
    else:
        api_url = os.environ.get("PREFECT_API_URL")
        if not api_url:
            raise KeelError("stack deploy needs PREFECT_API_URL (the Prefect server to deploy to)")
        provision(api_url, settings.crash_after_seconds)
        deploy_project({})
        print(f"work pools, crash detection and prefect.yaml's deployments are on {api_url}")
    return 0
