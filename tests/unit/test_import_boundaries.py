import subprocess
import sys

from tests.conftest import REPO

# Imports every module of the library, sub-packages included, and prints their names.
IMPORT_ALL = (
    "import importlib, pkgutil, sys, keel\n"
    "names = sorted(m.name for m in pkgutil.walk_packages(keel.__path__, 'keel.'))\n"
    "for name in names:\n"
    "    importlib.import_module(name)\n"
    "print('\\n'.join(names))\n"
)


def library_modules() -> list[str]:
    """Every module and package of keel/, from the files."""
    names = []
    for path in (REPO / "keel").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(set(names) - {"keel"})


def test_keel_imports_without_prefect():
    """The library is importable, module by module, without pulling in Prefect."""
    code = IMPORT_ALL + "assert 'prefect' not in sys.modules, 'keel imported prefect'\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == library_modules()  # the walk reached every sub-package


def test_importing_keel_creates_no_folders(tmp_path):
    """No import-time side effects: importing every module writes nothing to the working directory."""
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "KEEL_HOME": str(tmp_path), "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == library_modules()
    assert list(tmp_path.iterdir()) == []
