"""Image-folder ingest on real fruit photos with planted bad files."""

import shutil

import numpy as np
import pytest

from keel.core.config import load_dataset_config
from keel.modalities import ingest
from keel.core.errors import DatasetError
from tests.image_data import CLASSES, fruits_config, plant_bad_files, small_fruits


def test_classes_are_inferred_from_the_folders_and_splits_recognised(tmp_path):
    root = small_fruits(tmp_path / "photos")
    config = load_dataset_config(fruits_config(tmp_path, root))
    assert config.classes == {}  # loading the config lists nothing: the classes are read at ingest
    version = ingest(config, tmp_path / "versions").version
    assert version.meta["class_names"] == CLASSES and version.meta["labels"] == list(range(6))
    assert version.meta["train_rows"] == 24 and version.meta["evaluation_rows"] == 12
    assert version.images().shape == (36, 64, 64, 3) and version.images().dtype == np.uint8
    assert sorted(np.unique(version.labels())) == list(range(6))


def test_bad_files_are_quarantined_with_reasons_and_awkward_ones_converted(tmp_path):
    root = small_fruits(tmp_path / "photos")
    planted = plant_bad_files(root)
    result = ingest(load_dataset_config(fruits_config(tmp_path, root)), tmp_path / "versions")
    profile = result.version.profile().set_index("file")
    for file, expected in planted.items():
        action, detail = expected.split(": ", 1)
        row = profile.loc[file]
        if action == "quarantine":
            assert row["status"] == "quarantined" and detail in row["reason"], (file, row["reason"])
        else:
            assert row["status"] == "ok" and detail in row["notes"], (file, row["notes"])
    assert result.version.meta["quarantined"] == 4 and result.version.meta["rows"] == 36 + 4
    quarantine = (result.version.path / "quarantine.csv").read_text()
    assert "train/freshapples/truncated.jpg" in quarantine and "zero-size file" in quarantine
    rotated = profile.loc["train/freshapples/rotated.jpg"]
    assert (rotated["width"], rotated["height"]) == (200, 300)  # EXIF rotation applied before anything else
    deep = result.version.images()[int(profile.loc["train/freshapples/deep.png", "stored"])]
    assert deep.std() > 10 and (deep[..., 0] == deep[..., 1]).all()  # real picture content, grey in RGB


def test_a_rerun_on_unchanged_folders_reuses_the_version_and_a_change_makes_a_new_one(tmp_path):
    root = small_fruits(tmp_path / "photos")
    config = load_dataset_config(fruits_config(tmp_path, root))
    first = ingest(config, tmp_path / "versions")
    again = ingest(config, tmp_path / "versions")
    assert again.reused and again.version.id == first.version.id
    victim = sorted((root / "train" / "freshbanana").iterdir())[0]
    victim.unlink()
    changed = ingest(config, tmp_path / "versions")
    assert not changed.reused and changed.version.id != first.version.id and changed.version.meta["train_rows"] == 23


def test_a_duplicate_across_splits_is_flagged(tmp_path):
    root = small_fruits(tmp_path / "photos")
    photo = sorted((root / "train" / "rottenoranges").iterdir())[0]
    shutil.copy(photo, root / "valid" / "rottenoranges" / "copy.jpg")
    profile = ingest(load_dataset_config(fruits_config(tmp_path, root)), tmp_path / "versions").version.profile()
    flagged = profile[profile["duplicate_across_splits"]]
    assert set(flagged["file"]) == {str(photo.relative_to(root)), "valid/rottenoranges/copy.jpg"}


def test_one_folder_of_classes_is_split_by_the_evaluation_rule(tmp_path):
    root = tmp_path / "photos"
    small_fruits(tmp_path / "staging", per_class=10, valid_per_class=0)
    shutil.move(tmp_path / "staging" / "train", root)
    config = load_dataset_config(fruits_config(tmp_path, root, image_folder={"root": str(root)},
                                               evaluation_split={"fraction": 0.2, "seed": 1}))
    meta = ingest(config, tmp_path / "versions").version.meta
    assert meta["evaluation_rows"] == 12 and meta["train_rows"] == 48


def test_missing_folder_and_too_few_classes_are_clear_errors(tmp_path):
    nowhere = load_dataset_config(fruits_config(tmp_path, tmp_path / "nowhere"))  # loads: nothing is listed yet
    with pytest.raises(DatasetError, match="image folder not found"):
        ingest(nowhere, tmp_path / "versions")
    (tmp_path / "one" / "train" / "apples").mkdir(parents=True)
    (tmp_path / "one" / "valid" / "apples").mkdir(parents=True)
    with pytest.raises(DatasetError, match="at least two class folders"):
        ingest(load_dataset_config(fruits_config(tmp_path, tmp_path / "one")), tmp_path / "versions")
    root = small_fruits(tmp_path / "photos")
    for photo in (root / "train").rglob("*.*"):
        photo.write_bytes(b"")
    with pytest.raises(DatasetError, match="no usable training images"):
        ingest(load_dataset_config(fruits_config(tmp_path, root)), tmp_path / "versions")


def _outside_photo(tmp_path, index=10):
    """A real fruit photo outside the dataset root (not one of the photos small_fruits copies)."""
    from tests.image_data import FRUITS

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    source = sorted((FRUITS / "train" / "rottenbanana").iterdir())[index]
    shutil.copy(source, elsewhere / f"secret-{index}.jpg")
    return elsewhere / f"secret-{index}.jpg"


def test_a_link_out_of_the_dataset_is_quarantined_and_a_link_inside_is_a_duplicate(tmp_path):
    root = small_fruits(tmp_path / "photos")
    apples = root / "train" / "freshapples"
    (apples / "outside.jpg").symlink_to(_outside_photo(tmp_path))
    target = sorted(apples.iterdir())[0]
    (apples / "zz-inside.jpg").symlink_to(target.name)  # relative link to a photo in the same folder
    result = ingest(load_dataset_config(fruits_config(tmp_path, root)), tmp_path / "versions")
    profile = result.version.profile().set_index("file")
    outside = profile.loc["train/freshapples/outside.jpg"]
    assert outside["status"] == "quarantined" and outside["reason"] == "link points outside the dataset"
    assert outside["bytes"] == 0 and outside["duplicate_of"] == ""  # never read
    inside = profile.loc["train/freshapples/zz-inside.jpg"]
    assert inside["status"] == "ok" and inside["duplicate_of"] == str(target.relative_to(root))
    assert not inside["duplicate_across_splits"]
    assert result.version.meta["quarantined"] == 1 and result.version.meta["rows"] == 36 + 1
    assert "train/freshapples/outside.jpg,train,freshapples" in (result.version.path / "quarantine.csv").read_text()
    # The refused entry is part of the version id: the same folders reuse the version, a link
    # retargeted into the dataset makes a new one in which it is read.
    assert ingest(load_dataset_config(fruits_config(tmp_path, root)), tmp_path / "versions").reused
    (apples / "outside.jpg").unlink()
    (apples / "outside.jpg").symlink_to(target.name)
    retargeted = ingest(load_dataset_config(fruits_config(tmp_path, root)), tmp_path / "versions")
    assert not retargeted.reused and retargeted.version.meta["quarantined"] == 0


def test_a_linked_folder_is_one_quarantined_entry_and_the_rest_ingests(tmp_path):
    from keel.core.listing import FOLDER_LINK

    root = small_fruits(tmp_path / "photos")
    outside = _outside_photo(tmp_path).parent
    (root / "train" / "freshapples" / "more").symlink_to(outside, target_is_directory=True)
    (root / "train" / "freshbanana" / "again").symlink_to(root / "train" / "freshoranges", target_is_directory=True)
    (root / "valid" / "rottenapples2").symlink_to(root / "valid" / "rottenapples", target_is_directory=True)
    result = ingest(load_dataset_config(fruits_config(tmp_path, root)), tmp_path / "versions")
    profile = result.version.profile().set_index("file")
    refused = profile[profile["status"] == "quarantined"]
    assert sorted(refused.index) == ["train/freshapples/more", "train/freshbanana/again", "valid/rottenapples2"]
    assert all(reason.startswith(FOLDER_LINK) for reason in refused["reason"])
    assert "points outside the dataset" in refused.loc["train/freshapples/more", "reason"]
    assert result.version.meta["rows"] == 36 and result.version.meta["train_rows"] == 24
    # A split folder that is a link is a clear error, not a silently smaller dataset.
    other = small_fruits(tmp_path / "split-link" / "real")
    (tmp_path / "split-link" / "photos").mkdir()
    (tmp_path / "split-link" / "photos" / "train").symlink_to(other / "train", target_is_directory=True)
    shutil.copytree(other / "valid", tmp_path / "split-link" / "photos" / "valid")
    with pytest.raises(DatasetError, match="split folder is a symbolic link"):
        ingest(load_dataset_config(fruits_config(tmp_path, tmp_path / "split-link" / "photos", name="linked")),
               tmp_path / "versions")


def test_odd_but_legal_names_are_ingested_and_skipped_hidden_files_are_counted(tmp_path):
    from keel.core.listing import is_hidden

    root = small_fruits(tmp_path / "photos")
    apples = root / "train" / "freshapples"
    photo = sorted(apples.iterdir())[0]
    odd = {"...jpg": 10, "..jpg": 11}
    for name, index in odd.items():
        shutil.copy(_outside_photo(tmp_path, index), apples / name)
    hidden = [".DS_Store", "._" + photo.name, ".secret.jpg", f".{photo.name}.a1b2.tmp", "Thumbs.db",
              ".ipynb_checkpoints"]
    for name in hidden[:-1]:
        (apples / name).write_bytes(photo.read_bytes())
    (apples / ".ipynb_checkpoints").mkdir()
    shutil.copy(photo, apples / ".ipynb_checkpoints" / "copy.jpg")
    result = ingest(load_dataset_config(fruits_config(tmp_path, root)), tmp_path / "versions")
    profile = result.version.profile().set_index("file")
    for name in odd:
        assert profile.loc[f"train/freshapples/{name}", "status"] == "ok"
    assert result.version.meta["rows"] == 36 + 2 and result.version.meta["quarantined"] == 0
    assert result.version.meta["hidden_skipped"] == len(hidden)
    assert result.version.meta["hidden_files"] == sorted(f"train/freshapples/{n}" for n in hidden)
    assert not {f"train/freshapples/{n}" for n in hidden} & set(profile.index)
    assert "train/freshapples/.ipynb_checkpoints/copy.jpg" not in profile.index
    assert [n for n in ["...jpg", "..png", ".jpg", ".cache", "._x.jpg", ".x.jpg.1.tmp", "..tmp", "desktop.ini",
                        ".DS_STORE", "a.jpg", "...", "x..jpg"] if is_hidden(n)] == \
        [".jpg", ".cache", "._x.jpg", ".x.jpg.1.tmp", "..tmp", "desktop.ini", ".DS_STORE", "..."]


def test_one_listing_serves_csv_folders_and_photo_folders(tmp_path):
    """keel.core.listing: the same hidden-name rules one level deep (CSV inputs, landing folders)
    and at every level (photos); a link to a file outside the folder is followed for CSV inputs
    and refused for photos."""
    from keel.core.listing import LINK_OUTSIDE, list_files, visible_files

    folder = tmp_path / "inputs"
    (folder / "deeper").mkdir(parents=True)
    for name in ("a.csv", "B.CSV.GZ", ".hidden.csv", "._a.csv", "notes.txt", "deeper/c.csv"):
        (folder / name).write_text("label,pixel1\n1,2\n")
    (tmp_path / "elsewhere.csv").write_text("label,pixel1\n1,2\n")
    (folder / "linked.csv").symlink_to(tmp_path / "elsewhere.csv")
    assert list_files(folder, (".csv", ".csv.gz")) == [str(folder / n) for n in ("B.CSV.GZ", "a.csv", "linked.csv")]
    assert list_files(folder / "a.csv", (".csv",)) is None  # not a folder
    photos = visible_files(folder, recursive=True)
    assert photos.files == [str(folder / n) for n in ("B.CSV.GZ", "a.csv", "deeper/c.csv", "notes.txt")]
    assert photos.quarantined == {str(folder / "linked.csv"): LINK_OUTSIDE}
    assert photos.hidden == [str(folder / n) for n in ("._a.csv", ".hidden.csv")]
