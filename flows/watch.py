"""`keel watch`: a small watcher that emits a Prefect event for each file that lands.

The `validate-incoming` deployment (prefect.yaml) has a trigger on `keel.data.landed`: each
event starts a validation run of that file on the `cpu` pool. The watcher only notices and
announces; validation runs wherever the workers are.
"""

from __future__ import annotations

import time

from flows.prefect_api import flush_prefect_workers
from keel.core.io import refuse_credentials
from keel.data.landing import Landed, LandingWatcher, absolute

EVENT = "keel.data.landed"


def emit_landed(landed: Landed, dataset_config: str) -> None:
    from prefect.events import emit_event  # Prefect is slow to import: only once a file has landed

    emit_event(
        event=EVENT,
        resource={"prefect.resource.id": f"keel.landed.{landed.sha256[:16]}",
                  "prefect.resource.name": landed.path.rsplit("/", 1)[-1]},
        payload={"path": landed.path, "dataset_config": dataset_config, "sha256": landed.sha256, "size": landed.size},
    )


def watch(landing: str, dataset_config: str, interval: float = 2.0, once: bool = False, log=print) -> int:
    """Scans `landing` every `interval` seconds and emits one event per new file; with `once`,
    returns after the first scan that finds the folder quiet. Returns the number of events."""
    # Each event carries the file's URL into Prefect's database and the triggered run's parameters.
    refuse_credentials(landing, "the landing folder")
    watcher = LandingWatcher(absolute(landing))
    emitted = 0
    log(f"watching {watcher.folder} for {dataset_config} (every {interval:g} s; state {watcher.state_file})")
    watcher.scan()  # the first scan only records sizes: a file must hold still for one interval
    while True:
        time.sleep(interval)
        found = watcher.scan()
        for landed in found:
            emit_landed(landed, dataset_config)
            flush_prefect_workers()  # sent before it is marked: a crash here re-announces, never loses
            watcher.mark_reported(landed)
            emitted += 1
            log(f"landed {landed.path} ({landed.size} bytes, sha256 {landed.sha256[:12]}): {EVENT} emitted")
        if once and not found:
            return emitted
