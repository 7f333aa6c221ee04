"""The review experience in a real browser: optuna-dashboard and report.html in headless Chromium.

A quick toy study (with figures) runs once for the module; the dashboard is served from it by the
real command line and opened in Debian's Chromium through selenium. Screenshots go to
``out/screenshots/`` for a person to look at. Skipped, saying so, only where Chromium or its
driver is not installed (``make browser`` installs both).
"""

from __future__ import annotations

import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from geostudy.cli import study_main
from tests.conftest import ROOT

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = ROOT / "out" / "screenshots"
# Without the background-networking flags Chromium hangs on a closed network.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000")
WAIT_S = 45
N_TRIALS = 6  # toy_quick (TPE, seed 0) prunes trial 4: 5 complete, enough for importances

if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
    pytest.skip(f"headless Chromium not installed ({CHROMIUM}, {CHROMEDRIVER} missing): run `make browser` or "
                "`apt-get install chromium chromium-driver`", allow_module_level=True)

from selenium import webdriver  # noqa: E402 - only once Chromium is known to exist
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def study_out(tmp_path_factory) -> Path:
    """``toy_quick`` (each trial uploads a PNG) run to N_TRIALS finished trials; returns the out folder."""
    out = tmp_path_factory.mktemp("browser") / "out"
    assert study_main(["--study", "toy_quick", "--out", str(out), "--n-trials", str(N_TRIALS), "--no-progress"]) == 0
    return out


def _study(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="toy_quick", storage=f"sqlite:///{out / 'toy_quick' / 'toy_quick.db'}")


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="geostudy-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    chrome.set_page_load_timeout(WAIT_S)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield chrome
    finally:
        chrome.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _severe(chrome: webdriver.Chrome) -> list[str]:
    """Console errors since the last call (the log is drained by reading it)."""
    return [entry["message"] for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]


def _wait(chrome: webdriver.Chrome, script: str, what: str):
    """Wait until the JavaScript expression ``script`` is truthy; fail naming ``what``."""
    try:
        return WebDriverWait(chrome, WAIT_S, poll_frequency=0.25).until(lambda c: c.execute_script(f"return {script}"))
    except Exception:
        _screenshot(chrome, "failure")
        raise AssertionError(f"the page never showed {what}; screenshot in {SCREENSHOTS}/failure.png") from None


def _screenshot(chrome: webdriver.Chrome, name: str, full_page: bool = False) -> Path:
    if full_page:
        height = chrome.execute_script("return document.documentElement.scrollHeight")
        chrome.set_window_size(1400, min(int(height) + 40, 16000))
    path = SCREENSHOTS / f"{name}.png"
    chrome.save_screenshot(str(path))
    if full_page:
        chrome.set_window_size(1400, 1000)
    return path


@dataclass
class Review:
    """What the module looks at: the dashboard's printed URL and the ``--report`` run (started together)."""

    url: str
    report: subprocess.Popen


@pytest.fixture(scope="module")
def review(study_out: Path) -> Iterator[Review]:
    """``optuna_hyper.py --dashboard`` on a free port, and ``--report`` started alongside it.

    Both start before the browser so that their imports overlap its start-up.
    """
    port = _free_port()
    command = [sys.executable, str(ROOT / "optuna_hyper.py"), "--study", "toy_quick", "--out", str(study_out)]
    report = subprocess.Popen([*command, "--report"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    proc = subprocess.Popen([*command, "--dashboard", "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    printed = []
    try:
        while True:
            try:
                line = lines.get(timeout=WAIT_S)
            except queue.Empty:
                pytest.fail(f"the dashboard printed no URL within {WAIT_S} s: {''.join(printed)}")
            printed.append(line)
            found = re.search(r"http://[^\s]+/", line)
            if found:
                break
            if proc.poll() is not None:
                pytest.fail(f"the dashboard exited with {proc.returncode}: {''.join(printed)}")
        assert found.group(0) == f"http://127.0.0.1:{port}/"
        yield Review(url=found.group(0), report=report)
    finally:
        for child in (proc, report):
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def test_dashboard_shows_study_trials_notes_and_artifacts(review, driver, study_out):
    dashboard_url = review.url
    study = _study(study_out)
    n_trials = len(study.trials)
    assert n_trials >= N_TRIALS
    _severe(driver)  # start from an empty console log

    driver.get(dashboard_url)  # redirects to /dashboard/, the study list
    _wait(driver, "document.body.innerText.includes('toy_quick')", "the study in the study list")
    _screenshot(driver, "dashboard_study_list")
    assert _severe(driver) == []

    base = f"{dashboard_url}dashboard/studies/{study._study_id}"
    driver.get(f"{base}/smartSelection")  # the trial table (with a parallel-coordinate filter above it)
    _wait(driver, f"document.body.innerText.includes('of {n_trials}')", f"a trial table of {n_trials} trials")
    rows = driver.execute_script("return Math.max(0, ...Array.from(document.querySelectorAll('table'))"
                                 ".map(t => t.querySelectorAll('tbody tr').length))")
    assert rows == n_trials
    _screenshot(driver, "dashboard_trial_table", full_page=True)
    assert _severe(driver) == []

    driver.get(f"{base}/trials?numbers=0")  # trial 0: its note and its figure
    _wait(driver, f"document.body.innerText.includes('{n_trials} Trials')", "the trial list")
    _wait(driver, "document.body.innerText.includes('Trial 0: complete')", "trial 0's note")
    width = _wait(driver, "Array.from(document.images).filter(i => i.src.includes('/artifacts/') && i.complete)"
                          ".map(i => i.naturalWidth).find(w => w > 0)", "an artifact image that loaded")
    assert width > 0
    text = driver.execute_script("return document.body.innerText")
    assert "Config that differs from the base" in text and "branin.png" in text
    _screenshot(driver, "dashboard_trial_note_and_artifact", full_page=True)
    assert _severe(driver) == []


def test_report_renders_plots_and_best_figure(review, driver, study_out):
    printed, _ = review.report.communicate(timeout=240)
    assert review.report.returncode == 0, printed
    report = study_out / "toy_quick" / "report.html"
    _severe(driver)

    driver.get(report.resolve().as_uri())
    n_plots = driver.execute_script("return document.querySelectorAll('.plotly-graph-div').length")
    assert n_plots >= 5
    _wait(driver, f"document.querySelectorAll('.js-plotly-plot .main-svg').length > 0 && "
                  f"document.querySelectorAll('.js-plotly-plot').length === {n_plots}", f"{n_plots} rendered plots")
    rendered = driver.execute_script("return Array.from(document.querySelectorAll('.plotly-graph-div'))"
                                     ".filter(d => d.querySelector('svg.main-svg')).length")
    assert rendered == n_plots
    widths = _wait(driver, "(() => { const w = Array.from(document.querySelectorAll('figure.artifact img'))"
                           ".map(i => i.complete ? i.naturalWidth : 0); return w.length && w.every(x => x > 0) && w; })()",
                   "the best trial's figure")
    assert widths and all(w > 0 for w in widths)
    _screenshot(driver, "report", full_page=True)
    assert _severe(driver) == []
