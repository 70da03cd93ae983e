"""`keel ui [--stop]`: the project's Prefect and MLflow UIs and its report files (ops/ui.py)."""

from __future__ import annotations

import argparse


def ui(args: argparse.Namespace) -> int:
    # ops/ here, not at the top: psutil and MLflow's client would slow `keel --help`.
    from ops.ui import ProjectUI, serve_until_stopped, stop_running

    if args.stop:
        print("keel ui stopped" if stop_running() else "keel ui was not running for this project")
        return 0
    started = ProjectUI().start()
    print(started.describe(), flush=True)
    serve_until_stopped(started)
    return 0
