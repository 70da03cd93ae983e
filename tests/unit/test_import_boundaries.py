import subprocess
import sys


def test_keel_imports_without_prefect():
    """The library is importable, module by module, without pulling in Prefect."""
    code = (
        "import sys, pkgutil, importlib, keel\n"
        "for m in pkgutil.iter_modules(keel.__path__):\n"
        "    importlib.import_module('keel.' + m.name)\n"
        "assert 'prefect' not in sys.modules, 'keel imported prefect'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_importing_keel_creates_no_folders(tmp_path):
    """No import-time side effects: importing every module writes nothing to the working directory."""
    code = "import keel.stages.pipeline, keel.tracking.registry, keel.tracking.client, keel.validation.checks"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "KEEL_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.iterdir()) == []
