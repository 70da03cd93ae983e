"""Outputs honour the umask: a file or folder written atomically (keel.core.atomic) gets the mode
any program's output gets (0o666 / 0o777 less the umask), so teammates read a scoring job's
predictions and reports as they read any other file in the folder."""

from __future__ import annotations

import os
import stat

import pytest

from keel.core.atomic import atomic_dir, atomic_path


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("umask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_atomic_outputs_get_the_mode_the_umask_gives(tmp_path, umask, file_mode, folder_mode):
    previous = os.umask(umask)
    try:
        with atomic_path(tmp_path / "predictions.csv") as tmp:
            tmp.write_text("id,label\n1,3\n")
        with atomic_dir(tmp_path / "report") as tmp:
            (tmp / "report.json").write_text("{}")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "predictions.csv") == file_mode
    assert _mode(tmp_path / "report") == folder_mode
    assert _mode(tmp_path / "report" / "report.json") == file_mode
    assert (tmp_path / "predictions.csv").read_text() == "id,label\n1,3\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
