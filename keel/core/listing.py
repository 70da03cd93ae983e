"""The one way Keel lists the files of a folder (local or fsspec URL): which names are
hidden, which symbolic links are followed, what is refused and why.

`list_folder` is one level, `find_visible` every level below a folder; `visible_files` and
`list_files` take a path or URL and give paths back as given (URLs when remote). Image-folder
ingest, `keel predict` (CSV inputs and folders of photos) and landing folders all list here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import fsspec
from fsspec.implementations.local import LocalFileSystem

from keel.core.errors import DatasetError
from keel.core.io import is_remote, reading

# Names that tools leave beside photos (macOS Finder, Windows Explorer); skipped like dotfiles.
JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini"})
LINK_OUTSIDE = "link points outside the dataset"
FOLDER_LINK = "folder is a symbolic link; Keel does not follow folder links"
UNREADABLE_FOLDER = "folder cannot be read (permission denied)"


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is skipped when listing inputs.

    Hidden are: names starting with "." (".cache", ".partial.csv", ".jpg"), except a name whose
    part before the extension is only dots ("...jpg", "..png": odd but legal photo names,
    listed); always Keel's own temporaries (".*.tmp") and AppleDouble files ("._*"); and the
    junk tools leave beside photos (.DS_Store, Thumbs.db, ehthumbs.db, desktop.ini), whatever
    their case. Everything else is listed, and a file that is not a photo is then quarantined
    with its reason, not skipped.
    """
    lowered = name.lower()
    if lowered in JUNK_NAMES or lowered.startswith("._") or (lowered.startswith(".") and lowered.endswith(".tmp")):
        return True
    if not name.startswith("."):
        return False
    path = PurePosixPath(name)
    return not (path.suffix and set(path.stem) == {"."})


@dataclass
class Listing:
    """What listing a folder found: files to read, entries refused with a reason (path ->
    reason), hidden names skipped, and (one level only) the subfolders."""

    files: list[str] = field(default_factory=list)
    quarantined: dict[str, str] = field(default_factory=dict)
    hidden: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def list_folder(fs, folder: str, root: str | None = None) -> Listing:
    """One level of `folder` on filesystem `fs` (local or fsspec), sorted by name.

    Hidden names (`is_hidden`) are skipped and reported. Symbolic links (local disks only)
    are never followed out of `root` (default `folder`): a link whose target lies outside
    `root` is refused ("link points outside the dataset") and so is a link to a folder, even
    one inside `root` (no cycles, no photo listed twice through two paths). A link to a file
    inside `root` is listed like the file itself (its content makes it a duplicate of its
    target). Broken links, unreadable folders and devices, pipes or sockets are refused too.
    """
    folder = folder.rstrip("/") or "/"
    listing = Listing()
    try:
        entries = sorted(fs.ls(folder, detail=True), key=lambda e: e["name"])
    except PermissionError:
        listing.quarantined[folder] = UNREADABLE_FOLDER
        return listing
    real_root = os.path.realpath(root if root is not None else folder) if isinstance(fs, LocalFileSystem) else None
    for entry in entries:
        path = entry["name"].rstrip("/")
        if path == folder:
            continue
        if is_hidden(PurePosixPath(path).name):
            listing.hidden.append(path)
        elif entry.get("islink"):
            target = os.path.realpath(path)
            if os.path.isdir(target):
                listing.quarantined[path] = FOLDER_LINK + ("" if _inside(target, real_root) else
                                                           " (it points outside the dataset)")
            elif not _inside(target, real_root):
                listing.quarantined[path] = LINK_OUTSIDE
            elif not os.path.exists(target):
                listing.quarantined[path] = "broken link: its target does not exist"
            elif not os.path.isfile(target):
                listing.quarantined[path] = "link to something that is not a regular file (a device, pipe or socket)"
            else:
                listing.files.append(path)
        elif entry["type"] == "directory":
            listing.folders.append(path)
        elif entry["type"] == "file":
            listing.files.append(path)
        else:
            listing.quarantined[path] = "not a regular file (a device, pipe or socket)"
    return listing


def find_visible(fs, folder: str, root: str | None = None) -> Listing:
    """Every file below `folder` on filesystem `fs`, by the rules of `list_folder` applied at
    every level (hidden folders are skipped whole); `files` sorted by path. The one listing
    of photos: image-folder ingest and `keel predict` on a folder of photos both use it."""
    folder = folder.rstrip("/") or "/"
    root = folder if root is None else root
    found = Listing()
    pending = [folder]
    while pending:
        level = list_folder(fs, pending.pop(), root)
        found.files += level.files
        found.quarantined.update(level.quarantined)
        found.hidden += level.hidden
        pending += level.folders
    found.files.sort()
    found.hidden.sort()
    found.quarantined = dict(sorted(found.quarantined.items()))
    return found


def visible_files(url: str | Path, recursive: bool = False, links_out: bool = False) -> Listing | None:
    """What the folder `url` (local path or fsspec URL) holds by the rules of `list_folder`:
    one level, or every level below it with `recursive`; paths given back as URLs when `url`
    is remote. None when `url` is not a folder. With `links_out`, a link to a file outside the
    folder is listed like the file (CSV inputs a user points at), not refused (photos of a dataset)."""
    fs, root = fsspec.core.url_to_fs(str(url))
    with reading(str(url)):
        if not fs.isdir(root):
            return None
        limit = os.sep if links_out else None
        found = find_visible(fs, root, limit) if recursive else list_folder(fs, root, limit)
    if not is_remote(url):
        return found
    return Listing([fs.unstrip_protocol(p) for p in found.files],
                   {fs.unstrip_protocol(p): reason for p, reason in found.quarantined.items()},
                   [fs.unstrip_protocol(p) for p in found.hidden], [fs.unstrip_protocol(p) for p in found.folders])


def list_files(url: str | Path, suffixes: tuple[str, ...]) -> list[str] | None:
    """The visible files (see `is_hidden`) in the folder `url` whose names end with `suffixes`
    (any case; sorted), links to files followed wherever they point; None when `url` is not a
    folder. A folder that cannot be read is a DatasetError."""
    found = visible_files(url, links_out=True)
    if found is None:
        return None
    if UNREADABLE_FOLDER in found.quarantined.values():  # one level: only the folder itself
        raise DatasetError(f"{url}: cannot be read ({UNREADABLE_FOLDER})")
    return [p for p in found.files if p.lower().endswith(suffixes)]
