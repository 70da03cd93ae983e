"""Report folders: Keel replaces a folder it wrote before (marked), never one it did not."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from keel.core.atomic import ensure_writable_folder, replace_dir, temporary_beside, writing_into
from keel.core.errors import OutputError

# Every report folder Keel writes holds this file; only such a folder (or an empty one, or one
# Keel wrote before it marked its reports: `LEGACY_REPORT_NAMES` and a report.json) is replaced.
REPORT_MARKER = ".keel-report"
MARKER_TEXT = ("This folder is a validation report written by `keel validate`; validating into it again "
               "replaces it whole.\n")
LEGACY_REPORT_NAMES = {"report.json", "report.md", "docs", "quarantine.csv", "quarantined_rows.csv", "clean.parquet",
                       "anomalies.png"}


def is_keel_report(folder: Path) -> bool:
    """Whether `folder` is a report Keel wrote (its marker, or exactly a pre-marker report's files)."""
    folder = Path(folder)
    if (folder / REPORT_MARKER).is_file():
        return True
    names = {p.name for p in folder.iterdir()}
    if "report.json" not in names or not names <= LEGACY_REPORT_NAMES:
        return False
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and {"dataset", "input_sha256", "verdict", "suite"} <= set(report)


def check_report_dir(final: Path) -> None:
    """Refuses a report folder whose writing would delete data Keel did not write (an existing
    folder that is neither empty nor a Keel report, or a file), or that cannot be written."""
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise OutputError(f"{final}: is a file, not a report folder; pass --report a new folder or a previous Keel report")
    if final.is_dir() and any(final.iterdir()) and not is_keel_report(final):
        raise OutputError(f"{final}: the folder exists and is not a Keel report (no {REPORT_MARKER} file), so writing "
                          "the report would delete what it holds; pass --report a new or empty folder")
    ensure_writable_folder(final.parent, "pass --report a folder you can write to")


@contextlib.contextmanager
def building_report(final: Path) -> Iterator[Path]:
    """A folder to write the report into, built beside `final` (a dead writer's leftovers removed
    first) and put in its place whole when the block ends, after checking again that nothing
    else took `final` meanwhile; a full disk names the folder instead of failing as an outage."""
    with (writing_into(final.parent, "free space there or pass --report a folder on another disk"),
          temporary_beside(final, directory=True) as staged):
        yield staged
        check_report_dir(final)
        replace_dir(staged, final)
