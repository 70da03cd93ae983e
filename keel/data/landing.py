"""Landing folders: which landed files still need validating, and a watcher that notices new
ones once they have finished arriving. Local paths or fsspec URLs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import fsspec

from keel.core import settings
from keel.core.config import DatasetConfig
from keel.core.atomic import atomic_path
from keel.core.io import read_bytes, sha256_hex
from keel.core.listing import list_files

# What `keel validate` reads: CSV (gzip or not), parquet, IDX (gzip or not); texts also JSONL.
LANDED_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", "-ubyte", "-ubyte.gz", ".idx", ".idx.gz",
                   ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
# Names that say a file is still being written.
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart")


def landed_files(folder: str) -> list[str] | None:
    """The data files in a landing folder (hidden and partial files skipped); None when
    `folder` is not a folder."""
    files = list_files(folder, LANDED_SUFFIXES)
    return None if files is None else [f for f in files if not f.lower().endswith(PARTIAL_SUFFIXES)]


def default_report_dir(config: DatasetConfig, input_path: str, sha: str) -> Path:
    """Where `keel validate` reports on a landed file whose content has sha256 `sha`."""
    stem = Path(input_path).name.split(".")[0] or "batch"
    return settings.reports_dir() / "validation" / config.name / "incoming" / f"{stem}-{sha[:12]}"


def pending_files(config: DatasetConfig, input_path: str) -> list[str]:
    """[input_path] for a file; for a folder, its files that have no validation report yet."""
    files = landed_files(input_path)
    if files is None:
        return [input_path]
    pending = []
    for path in files:
        if not (default_report_dir(config, path, sha256_hex(read_bytes(path))) / "report.json").exists():
            pending.append(path)
    return pending


@dataclass
class Landed:
    path: str
    size: int
    sha256: str


class LandingWatcher:
    """Finds files that arrived in `folder` since the last scan. A file counts once its size and
    modification time stayed the same over two scans (it has finished arriving); each file
    content is reported once, remembered in a state file across restarts."""

    def __init__(self, folder: str, state_file: Path | None = None) -> None:
        self.folder = folder
        self.fs = fsspec.core.url_to_fs(folder)[0]
        key = sha256_hex(str(folder).encode())[:12]
        self.state_file = state_file or settings.home() / ".keel-watch" / f"{key}.json"
        self.reported: set[str] = set()
        if self.state_file.exists():
            self.reported = set(json.loads(self.state_file.read_text())["reported"])
        self._last: dict[str, tuple] = {}
        self._hashed: dict[str, tuple[tuple, Landed]] = {}  # path -> (size and mtime, what it held then)

    def scan(self) -> list[Landed]:
        now: dict[str, tuple] = {}
        for path in landed_files(self.folder) or []:
            info = self.fs.info(path)
            now[path] = (info.get("size"), info.get("mtime") or info.get("LastModified") or info.get("created"))
        settled = [p for p, stamp in now.items() if self._last.get(p) == stamp]
        self._last = now
        new = []
        for path in settled:
            # Read and hash a file once while it stays the same, not on every scan.
            stamp, landed = self._hashed.get(path, (None, None))
            if stamp != now[path]:
                data = read_bytes(path)
                landed = Landed(path=path, size=len(data), sha256=sha256_hex(data))
                self._hashed[path] = (now[path], landed)
            if f"{path}@{landed.sha256}" not in self.reported:
                new.append(landed)
        return new

    def mark_reported(self, landed: Landed) -> None:
        self.reported.add(f"{landed.path}@{landed.sha256}")
        with atomic_path(self.state_file) as tmp:
            tmp.write_text(json.dumps({"folder": str(self.folder), "reported": sorted(self.reported)}, indent=1))


def absolute(path: str) -> str:
    """A local path made absolute (workers run elsewhere); URLs unchanged."""
    return path if "://" in path else str(Path(path).resolve())
