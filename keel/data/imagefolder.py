"""Image-folder datasets: `root/<split>/<class>/*.jpg|png` (or `root/<class>/*`).

Ingest reads every file once, hashes it, and decodes it once. Files that cannot serve as
training images are quarantined with a reason (zero-size, not an image, truncated or corrupt,
smaller than `min_side`, a class folder the dataset does not know); files that can, after a
conversion, are kept with a note (EXIF orientation applied, CMYK or 16-bit or grayscale or
transparency converted, an extension that does not match the content). Each kept photo's
shorter side is resized to the stored size and the centre cropped, and the version is stored
like any other: images.npy (N, H, W, C uint8), labels and split indices, a per-file
profile.parquet and quarantine.csv. The version id is the hash of every file's path and
content plus the settings, so a re-run on unchanged folders decodes nothing.

The class names, unless the config gives them, are the training folder's subfolders, read
when the folder is (`with_classes`), never when the config loads. The image-folder modality
(keel.modalities.images) puts the parts below together into a version.

Photos are listed by `keel.core.listing.find_visible` (the listing `keel predict` uses too): hidden names
(dotfiles, `._*`, Keel's `.*.tmp`, .DS_Store, Thumbs.db; see `keel.core.listing.is_hidden`) are skipped
and counted in the version's meta (`hidden_skipped`, `hidden_files`); symbolic links are not
followed out of the dataset root and folder links are not followed at all, each such entry
quarantined with its reason. A link to a photo inside the root is read like the photo, so it is
a duplicate (`duplicate_of`, and `duplicate_across_splits` when it crosses splits) like any
copy. A split folder that is a link is an error.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath

import fsspec
import numpy as np
import pandas as pd

from keel.core.config import DatasetConfig
from keel.core.errors import DatasetError
from keel.core.io import read_bytes, sha256_hex
from keel.core.listing import FOLDER_LINK, find_visible, list_folder
from keel.data.splits import SplitPlan

SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "evaluation": ("valid", "validation", "val", "evaluation", "eval"),
    "test": ("test", "testing"),
}
# The extensions each decoded format may carry.
FORMAT_EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"}, "PNG": {".png"}, "GIF": {".gif"}, "BMP": {".bmp"},
    "WEBP": {".webp"}, "TIFF": {".tif", ".tiff"}, "MPO": {".jpg", ".jpeg"},
}
PROFILE_COLUMNS = ["row", "file", "split", "class_name", "label", "sha256", "bytes", "format", "mode", "width",
                   "height", "channels", "status", "reason", "notes", "stored", "duplicate_of", "duplicate_across_splits"]


def _filesystem(config: DatasetConfig):
    url = config.resolve(config.image_folder.root)
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.isdir(root):
        raise DatasetError(f"{url}: image folder not found; check image_folder.root in the dataset config")
    return fs, root.rstrip("/")


def _subfolders(fs, path: str, root: str | None = None) -> dict[str, str]:
    """name -> path of the visible subfolders of `path` that are not symbolic links."""
    return {PurePosixPath(p).name: p for p in list_folder(fs, path, root).folders}


def _folder_links(fs, path: str, root: str | None = None) -> dict[str, str]:
    """name -> path of the symbolic links to folders in `path` (not followed)."""
    return {PurePosixPath(p).name: p for p, reason in list_folder(fs, path, root).quarantined.items()
            if reason.startswith(FOLDER_LINK)}


def _split_link_error(root: str, path: str) -> DatasetError:
    return DatasetError(f"{path}: this split folder is a symbolic link and Keel does not follow folder links; "
                        f"move or copy the folder itself into {root}")


def split_folders(config: DatasetConfig) -> dict[str, str] | None:
    """Keel split -> folder, or None when the root holds the class folders directly."""
    fs, root = _filesystem(config)
    subfolders = _subfolders(fs, root)
    named = config.image_folder.splits
    links = _folder_links(fs, root)
    for name in named.values() if named else [n for names in SPLIT_FOLDERS.values() for n in names]:
        if name in links:
            raise _split_link_error(root, links[name])
    if named:
        missing = [f"{split}: {name}" for split, name in named.items() if name not in subfolders]
        if missing:
            raise DatasetError(f"{root}: image_folder.splits names folders that are not there ({', '.join(missing)})")
        return {split: subfolders[name] for split, name in named.items()}
    found = {}
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            if name in subfolders:
                found[split] = subfolders[name]
                break
    return found if "train" in found else None


def infer_classes(config: DatasetConfig) -> list[str]:
    """The class names: the training folder's subfolders, sorted."""
    folders = split_folders(config)
    fs, root = _filesystem(config)
    base = folders["train"] if folders else root
    classes = sorted(_subfolders(fs, base))
    if len(classes) < 2:
        raise DatasetError(f"{base}: an image-folder dataset needs at least two class folders, found {classes}")
    return classes


def with_classes(config: DatasetConfig) -> DatasetConfig:
    """`config` with its classes: as the config gives them, else its class folders' names."""
    return config if config.classes else config.with_classes(infer_classes(config))


@dataclass
class ImageFile:
    split: str  # train, evaluation or test; "pool" before the evaluation split is drawn
    class_name: str
    relpath: str
    url: str
    reason: str | None = None  # set: refused by the listing (a link out of the dataset, a folder link...)


def scan(config: DatasetConfig) -> tuple[list[ImageFile], list[str]]:
    """(every visible file under the class folders in a stable order, including the entries the
    listing refused with their reason; the hidden files and folders skipped, relative to the root)."""
    fs, root = _filesystem(config)
    folders = split_folders(config) or {"pool": root}
    remote = "://" in config.resolve(config.image_folder.root)
    files, hidden = [], []

    def add(split, class_name, path, reason=None):
        relpath = str(PurePosixPath(path).relative_to(root))
        files.append(ImageFile(split, class_name, relpath, fs.unstrip_protocol(path) if remote else path, reason))

    for split, folder in folders.items():
        level = list_folder(fs, folder, root)
        hidden += level.hidden
        links = {p: r for p, r in level.quarantined.items() if r.startswith(FOLDER_LINK)}
        for class_dir in sorted([*level.folders, *links]):
            class_name = PurePosixPath(class_dir).name
            if class_dir in links:  # a class folder that is a link: one entry, not followed
                add(split, class_name, class_dir, links[class_dir])
                continue
            listing = find_visible(fs, class_dir, root)
            hidden += listing.hidden
            for path in sorted([*listing.files, *listing.quarantined]):
                add(split, class_name, path, listing.quarantined.get(path))
    if not files:
        raise DatasetError(f"{root}: no files under its class folders")
    return files, sorted(str(PurePosixPath(p).relative_to(root)) for p in hidden)


@dataclass
class Decoded:
    pixels: np.ndarray | None
    format: str | None = None
    mode: str | None = None
    width: int | None = None
    height: int | None = None
    reason: str | None = None  # set: quarantined
    notes: str = ""


def decode(data: bytes, relpath: str, height: int, width: int, channels: int, min_side: int) -> Decoded:
    """One file's bytes as an (height, width, channels) uint8 array, or the reason it cannot be."""
    from PIL import Image, ImageOps, UnidentifiedImageError  # lazy: only photo datasets and scoring need Pillow

    if not data:
        return Decoded(None, reason="zero-size file")
    notes, fmt = [], None
    try:
        image = Image.open(io.BytesIO(data))
        fmt, mode = image.format, image.mode
        image.load()  # a truncated file raises here (PIL does not load truncated images by default)
    except UnidentifiedImageError:
        return Decoded(None, reason="not a decodable image (unknown or corrupt format)")
    except (OSError, SyntaxError, ValueError) as exc:
        return Decoded(None, format=fmt, reason=f"truncated or corrupt image ({exc})")
    suffix = PurePosixPath(relpath).suffix.lower()
    if suffix not in FORMAT_EXTENSIONS.get(fmt, {suffix}):
        notes.append(f"extension {suffix or '(none)'} but the content is {fmt}")
    orientation = image.getexif().get(0x0112, 1)
    if orientation not in (1, None):
        image = ImageOps.exif_transpose(image)
        notes.append(f"EXIF orientation {orientation} applied")
    w, h = image.size
    if min(w, h) < min_side:
        return Decoded(None, fmt, mode, w, h, reason=f"{w}x{h} pixels, smaller than min_side {min_side}")
    image = _to_8bit(image, channels, notes)
    scale = max(height / h, width / w)
    resized = image.resize((max(width, round(w * scale)), max(height, round(h * scale))), Image.Resampling.BILINEAR,
                           reducing_gap=3.0)
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    pixels = np.asarray(resized.crop((left, top, left + width, top + height)), dtype=np.uint8)
    return Decoded(pixels.reshape(height, width, channels), fmt, mode, w, h, notes="; ".join(notes))


def _to_8bit(image, channels: int, notes: list[str]):
    from PIL import Image  # lazy, as in decode

    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        notes.append("16-bit scaled to 8-bit")
    elif mode == "CMYK":
        image = image.convert("RGB")
        notes.append("CMYK converted to RGB")
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
        notes.append("transparency flattened onto white")
    target = "L" if channels == 1 else "RGB"
    if image.mode != target:
        if target == "RGB" and image.mode in ("L", "1"):
            notes.append("grayscale converted to RGB")
        image = image.convert(target)
    return image


@dataclass
class FolderContent:
    """Every file of an image folder read once: the listing, the bytes, their sha256 and the
    hash of the whole listing (paths, contents and refusals), which the version id is made of."""

    files: list[ImageFile]
    hidden: list[str]
    blobs: list[bytes]
    hashes: list[str]
    content: str

    def version_key(self, config: DatasetConfig) -> dict:
        """What, besides the settings every version depends on, decides this folder's version id."""
        return {"files": self.content, "image_folder": config.image_folder.model_dump(), "classes": config.class_names}


def read_folder(config: DatasetConfig) -> FolderContent:
    """Lists the image folder and reads (and hashes) every file the listing did not refuse."""
    files, hidden = scan(config)
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        blobs = list(pool.map(lambda f: b"" if f.reason else read_bytes(f.url), files))
    hashes = ["" if f.reason else sha256_hex(b) for f, b in zip(files, blobs)]
    listing = [[f.split, f.class_name, f.relpath, h, f.reason] if f.reason else [f.split, f.class_name, f.relpath, h]
               for f, h in zip(files, hashes)]
    return FolderContent(files, hidden, blobs, hashes, hashlib.sha256(json.dumps(listing).encode()).hexdigest())


def decode_folder(config: DatasetConfig, folder: FolderContent) -> tuple[pd.DataFrame, np.ndarray]:
    """(one profile row per file, the uint8 N x H x W x C images of the files kept): each file
    decoded once, or quarantined with its reason."""
    shape = config.image
    label_of = {name: label for label, name in config.classes.items()}

    def one(item):
        file, data = item
        if file.reason:
            return Decoded(None, reason=file.reason)
        if file.class_name not in label_of:
            return Decoded(None, reason=f"class folder '{file.class_name}' is not one of the dataset's classes "
                                        f"({', '.join(config.class_names)})")
        return decode(data, file.relpath, shape.height, shape.width, shape.channels, config.image_folder.min_side)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes and resizes without the GIL
        decoded = list(pool.map(one, zip(folder.files, folder.blobs)))
    profile = _profile(folder.files, folder.blobs, folder.hashes, decoded, label_of)
    kept = [d.pixels for d in decoded if d.pixels is not None]
    images = np.stack(kept) if kept else np.zeros((0, shape.height, shape.width, shape.channels), np.uint8)
    return profile, images


def record_split(config: DatasetConfig, profile: pd.DataFrame, plan: SplitPlan) -> np.ndarray:
    """Writes the drawn split and groups into the profile of the kept files and marks duplicate
    contents; returns the kept files' names (the stored rows' ids). No training image left is
    a DatasetError."""
    kept = (profile["status"] == "ok").to_numpy()
    profile.loc[kept, "split"] = plan.parts
    profile["group"] = -1
    profile.loc[kept, "group"] = plan.groups
    if not (plan.parts == "train").any():
        raise DatasetError(f"{config.resolve(config.image_folder.root)}: no usable training images "
                           f"({int((~kept).sum())} quarantined; see the reasons with `keel train` or in quarantine.csv)")
    _mark_duplicates(profile)
    return profile.loc[kept, "file"].to_numpy()


def folder_meta(config: DatasetConfig, folder: FolderContent, profile: pd.DataFrame) -> dict:
    """What an image-folder version's meta.json records of its files."""
    kept = profile["status"] == "ok"
    return {
        "sources": [{"split": "image-folder", "path": config.resolve(config.image_folder.root), "sha256": folder.content,
                     "files": len(folder.files)}],
        "header": [], "non_integer_columns": {}, "headers_differ": [],
        "rows": int(kept.sum()), "files": int(len(profile)), "quarantined": int((~kept).sum()),
        "converted": int((profile["notes"] != "").sum()),
        "hidden_skipped": len(folder.hidden), "hidden_files": folder.hidden[:100],
        "curated_batches": [], "images_stored": True, "images_missing_reason": None,
    }


def quarantine_table(profile: pd.DataFrame) -> pd.DataFrame:
    """The files set aside, with their reasons (quarantine.csv)."""
    return profile[profile["status"] != "ok"][["file", "split", "class_name", "sha256", "bytes", "reason"]]


def _profile(files, blobs, hashes, decoded, label_of) -> pd.DataFrame:
    stored = -1
    rows = []
    for i, (file, data, digest, d) in enumerate(zip(files, blobs, hashes, decoded)):
        ok = d.reason is None
        if ok:
            stored += 1
        rows.append({
            "row": i + 1, "file": file.relpath, "split": file.split, "class_name": file.class_name,
            "label": label_of.get(file.class_name, -1), "sha256": digest, "bytes": len(data), "format": d.format,
            "mode": d.mode, "width": d.width, "height": d.height,
            "channels": int(d.pixels.shape[2]) if ok else None, "status": "ok" if ok else "quarantined",
            "reason": d.reason or "", "notes": d.notes, "stored": stored if ok else -1,
        })
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS[:-2])


def _mark_duplicates(profile: pd.DataFrame) -> None:
    """`duplicate_of`: the first file with the same content; `duplicate_across_splits`: the
    same content in two splits (an evaluation image the model trained on)."""
    first = profile.groupby("sha256")["file"].transform("first")
    read = profile["sha256"] != ""  # entries the listing refused were never read
    profile["duplicate_of"] = np.where((first != profile["file"]) & read, first, "")
    splits = profile[profile["status"] == "ok"].groupby("sha256")["split"].nunique()
    profile["duplicate_across_splits"] = profile["sha256"].map(splits).fillna(1).astype(int) > 1
