"""Small image folders made from the bundled fruit photos, with planted bad files."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
FRUITS = REPO / "data" / "fruits"
CLASSES = ["freshapples", "freshbanana", "freshoranges", "rottenapples", "rottenbanana", "rottenoranges"]


def small_fruits(root: Path, per_class: int = 4, valid_per_class: int = 2) -> Path:
    """root/{train,valid}/<class>/ with the first photos of each class of the real data."""
    for split, n in (("train", per_class), ("valid", valid_per_class)):
        for name in CLASSES:
            target = root / split / name
            target.mkdir(parents=True, exist_ok=True)
            for photo in sorted((FRUITS / split / name).iterdir())[:n]:
                shutil.copy(photo, target / photo.name)
    return root


def fruits_config(folder: Path, root: Path, name: str = "fruits-small", size: int = 64, **overrides) -> Path:
    config = {"name": name, "format": "image-folder",
              "image_folder": {"root": str(root), "splits": {"train": "train", "evaluation": "valid"}, "min_side": 16},
              "image": {"height": size, "width": size, "channels": 3},
              "validation": {"min_rows": 10, "max_rows": 100000}}
    config.update(overrides)
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def plant_bad_files(root: Path) -> dict[str, str]:
    """Bad and awkward files in train/freshapples; returns file -> what ingest must do."""
    from PIL import Image

    folder = root / "train" / "freshapples"
    photo = Image.open(sorted((FRUITS / "train" / "freshapples").iterdir())[0]).convert("RGB")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not a photo")
    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    Image.new("RGB", (1, 1), (255, 0, 0)).save(folder / "pixel.png")
    sixteen = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    deep = Image.fromarray(sixteen)
    assert deep.mode == "I;16"
    deep.save(folder / "deep.png")
    photo.convert("CMYK").save(folder / "print.jpg", "JPEG")
    photo.save(folder / "really-a-png.jpg", "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    wide = photo.resize((300, 200))
    wide.save(folder / "rotated.jpg", "JPEG", exif=exif)
    return {
        "train/freshapples/empty.jpg": "quarantine: zero-size file",
        "train/freshapples/notes.jpg": "quarantine: not a decodable image",
        "train/freshapples/truncated.jpg": "quarantine: truncated or corrupt image",
        "train/freshapples/pixel.png": "quarantine: 1x1 pixels, smaller than min_side",
        "train/freshapples/deep.png": "keep: 16-bit scaled to 8-bit",
        "train/freshapples/print.jpg": "keep: CMYK converted to RGB",
        "train/freshapples/really-a-png.jpg": "keep: extension .jpg but the content is PNG",
        "train/freshapples/rotated.jpg": "keep: EXIF orientation 6 applied",
    }
