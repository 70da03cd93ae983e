"""Landing folders: what still needs validating, and the watcher's notion of a landed file."""

import yaml

from keel.core.config import load_dataset_config
from keel.validation.incoming import validate_batch
from keel.data.landing import LandingWatcher, pending_files
from tests.incoming_data import REPO, clean_batch

SIGN_MNIST = REPO / "conf" / "datasets" / "sign-mnist.yaml"


def test_watcher_reports_a_file_once_after_it_stops_growing(tmp_path, keel_home):
    landing = tmp_path / "landing"
    landing.mkdir()
    watcher = LandingWatcher(str(landing))
    growing = landing / "batch.csv"
    growing.write_text("label,pixel1\n")
    (landing / ".hidden.csv").write_text("x")
    (landing / "copying.csv.part").write_text("x")
    (landing / "notes.txt").write_text("x")
    assert watcher.scan() == []  # seen once: it may still be arriving
    with growing.open("a") as handle:
        handle.write("1,2\n")
    assert watcher.scan() == []  # it grew since the last scan
    landed = watcher.scan()
    assert [item.path for item in landed] == [str(growing)] and landed[0].size == len(growing.read_bytes())
    watcher.mark_reported(landed[0])
    assert watcher.scan() == []
    # A restarted watcher remembers what it reported; new content under the same name is new.
    again = LandingWatcher(str(landing))
    again.scan()
    assert again.scan() == []
    growing.write_text("label,pixel1\n3,4\n")
    again.scan()
    assert [item.sha256 for item in again.scan()] != [landed[0].sha256]


def test_pending_files_are_those_without_a_report(tmp_path, keel_home):
    config = load_dataset_config(str(SIGN_MNIST))
    landing = tmp_path / "landing"
    landing.mkdir()
    batch = clean_batch().head(60)
    batch.to_csv(landing / "a.csv", index=False)
    batch.head(50).to_csv(landing / "b.csv", index=False)
    assert pending_files(config, str(landing)) == [str(landing / "a.csv"), str(landing / "b.csv")]
    validate_batch(config, str(landing / "a.csv"))
    assert pending_files(config, str(landing)) == [str(landing / "b.csv")]
    assert pending_files(config, str(landing / "a.csv")) == [str(landing / "a.csv")]  # a named file is always validated
    assert yaml.safe_load(SIGN_MNIST.read_text())["name"] == config.name
