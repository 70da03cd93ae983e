"""What people see: after a small real training run, `keel ui` shows the flow run, its logs and
artifacts in the Prefect UI, the Data Docs offline, and the MLflow run and registered model,
checked in a real headless Chromium (Debian's, driven by Playwright) that may reach nothing
but this machine: a page that asks the internet for anything fails its test.

Screenshots of each page go to KEEL_SCREENSHOTS (docs/screenshots/ is made that way:
`KEEL_SCREENSHOTS=docs/screenshots .venv/bin/python -m pytest tests/browser`), else to a
temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO, write_dataset_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT_MS = 60_000


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def project(tmp_path_factory, small_rows):
    """A project trained once (1 epoch on 480 rows, promoted), as `keel train` runs it: the flow
    run in the project's own Prefect database, the model in its mlruns/."""
    home = tmp_path_factory.mktemp("ui-home")
    csv = home / "small.csv"
    small_rows.to_csv(csv, index=False)
    config = write_dataset_config(home, csv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "KEEL_"))}
    env.update(KEEL_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", GX_ANALYTICS_ENABLED="false",
               **{f"KEEL_UI_{name}_PORT": str(_free_port()) for name in ("PREFECT", "MLFLOW", "FILES")})
    done = subprocess.run([sys.executable, "-m", "cli.main", "train", "--dataset-config", str(config), "--epochs", "1",
                           "--batch-size", "64", "--floor", "0"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (home / ".keel" / "prefect" / "prefect.db").exists(), "the flow run is not in the project's database"
    return {"home": home, "env": env, "output": done.stdout}


@pytest.fixture(scope="module")
def ui(project):
    """`keel ui` for the project, stopped with Ctrl-C at the end (as a person stops it)."""
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "ui"], cwd=REPO, env=project["env"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    record = project["home"] / ".keel" / "ui.json"
    deadline = time.monotonic() + 240
    while not record.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"keel ui did not start:\n{process.stdout.read()[-3000:]}")
        time.sleep(0.5)
    urls = json.loads(record.read_text())
    yield urls
    process.send_signal(signal.SIGINT)
    try:
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert not record.exists(), "keel ui left its address book behind"
    for name in ("prefect", "mlflow", "files"):
        with pytest.raises(OSError):
            urllib.request.urlopen(urls[name], timeout=2)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright import sync_api as playwright
    except ImportError:
        pytest.fail("playwright is missing: `make setup` installs it (pyproject's dev extra)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` and `make test-browser` install Debian's chromium (apt-get install chromium)")
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    """A page that may load only from this machine: every other request is refused and recorded."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.outside = []

    def guard(route):
        host = urlsplit(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            page.outside.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    folder = Path(os.environ.get("KEEL_SCREENSHOTS") or request.config._tmp_path_factory.mktemp("screens"))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{request.node.name}.png"), full_page=False)
    context.close()


def _images_loaded(page) -> list[int]:
    """The natural widths of the page's images, once each has finished loading."""
    page.wait_for_function("() => [...document.images].every(i => i.complete)")
    return page.eval_on_selector_all("img", "images => images.map(i => i.naturalWidth)")


def _mlflow_run(project) -> tuple[str, str]:
    """(experiment id, run id) of the training run, from the CLI's summary."""
    run_id = re.search(r"run ([0-9a-f]{32})", project["output"]).group(1)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project['home'] / 'mlruns' / 'mlflow.db'}")
    return client.get_run(run_id).info.experiment_id, run_id


def _flow_run_id(project) -> str:
    from mlflow import MlflowClient

    _, run_id = _mlflow_run(project)
    client = MlflowClient(tracking_uri=f"sqlite:///{project['home'] / 'mlruns' / 'mlflow.db'}")
    return client.get_run(run_id).data.tags["keel.prefect.flow_run_id"]


def test_the_flow_run_shows_its_logs_and_artifacts(project, ui, page):
    flow_run = _flow_run_id(project)
    page.goto(f"{ui['prefect']}/runs/flow-run/{flow_run}")
    page.get_by_text("Completed").first.wait_for()
    page.get_by_text("Finished in state Completed").first.wait_for()  # the run's logs
    page.get_by_text(re.compile(r"epoch 1/1 +loss")).first.wait_for()  # with the training's epoch line
    page.get_by_text("Artifacts", exact=True).first.click()
    for key in ("evaluation-confusion-matrix", "data-docs", "mlflow-run", "promotion-verdict"):
        page.locator(f"text={key}").locator("visible=true").first.wait_for()
    assert not page.outside


@pytest.mark.parametrize("key", ["evaluation-confusion-matrix", "evaluation-worst-classified"])
def test_every_image_artifact_loads(project, ui, page, key):
    page.goto(f"{ui['prefect']}/artifacts/key/{key}")
    page.locator("a", has_text=re.compile(r"^[0-9a-f]{8}$")).first.click()  # its latest version's page
    page.locator("img").first.wait_for()
    widths = _images_loaded(page)
    assert widths and all(w > 0 for w in widths), widths
    assert not page.outside


def test_data_docs_show_their_results_offline(project, ui, page):
    docs = next((project["home"] / "reports" / "validation").rglob("index.html"))  # the training's validation
    relative = docs.relative_to(project["home"] / "reports").as_posix()
    page.goto(f"{ui['files']}/{relative}")
    # bootstrap-table (a script) built the results table: one row per validated table.
    page.get_by_text(re.compile(r"Showing 1 to 4 of 4 rows")).first.wait_for()
    page.get_by_role("cell", name="schema", exact=True).click()  # a row opens its validation results
    page.get_by_text(re.compile("Expectation Validation Result|Overview", re.I)).first.wait_for()
    # Styled: bootstrap's stylesheet loaded from the site, not a CDN.
    assert page.evaluate("() => [...document.styleSheets].some(s => (s.href || '').includes('bootstrap'))")
    assert not page.outside, page.outside


def test_the_mlflow_run_shows_its_learning_curves_and_links_to_the_prefect_run(project, ui, page):
    experiment, run = _mlflow_run(project)
    page.goto(f"{ui['mlflow']}/#/experiments/{experiment}/runs?workflowType=machine_learning")
    page.get_by_text(re.compile(r"sign-mnist-small@[0-9a-f]{8} seed 0")).first.wait_for()  # a name that says what ran
    page.goto(f"{ui['mlflow']}/#/experiments/{experiment}/runs/{run}?workflowType=machine_learning")
    page.locator(f"a[href*='/runs/flow-run/{_flow_run_id(project)}']").first.wait_for()
    page.get_by_role("tab", name="Model metrics").click()
    page.get_by_placeholder("Search metric charts").fill("loss")  # the learning curves, by name
    for curve in ("train_loss", "val_loss"):
        page.get_by_text(curve, exact=True).first.wait_for()
    assert not page.get_by_text(re.compile(r"evaluation_precision_")).count()  # per-class figures are a table
    assert not page.outside


def test_the_registered_model_shows_the_champion_its_history_and_verdicts(project, ui, page):
    page.goto(f"{ui['mlflow']}/#/models/keel-sign-mnist-small")
    page.get_by_text("champion").first.wait_for()
    page.get_by_text(re.compile(r"champion\s+v- -> v1")).first.wait_for()  # the readable alias history
    page.goto(f"{ui['mlflow']}/#/models/keel-sign-mnist-small/versions/1")
    page.get_by_text(re.compile("promoted", re.I)).first.wait_for()  # the gate's verdict
    assert not page.outside
