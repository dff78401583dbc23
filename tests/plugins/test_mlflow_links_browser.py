"""The MLflow links the pipeline writes, opened in a real browser on a real MLflow UI (``mlflow ui``).

MLflow 3's UI opens an experiment on its GenAI overview unless asked for model training: the links
must land on the run's page and the runs table, which is what a data scientist opens them for.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from datetime import date

import pytest

from pipeline import registry
from tests.conftest import label_flip_store
from tests.plugins.browser import chromium, quit_browser, screenshot, wait_for_text, wait_until


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_ui(tmp_path_factory):
    """A recorded cycle, and the MLflow UI on its tracking store at ``registry.ui_url``."""
    from pipeline.cycle import run_cycle

    port = _free_port()
    config = label_flip_store(tmp_path_factory.mktemp("mlflow-ui"), registry={"ui_url": f"http://127.0.0.1:{port}/"})
    outcome = run_cycle(config, date(2026, 1, 10))
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", config.registry.tracking_uri],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the MLflow UI did not start") from None
                time.sleep(1)
        yield config, outcome
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    quit_browser(driver)


def test_the_run_link_opens_the_run_among_the_model_training_views(mlflow_ui, browser):
    from selenium.webdriver.common.by import By

    config, outcome = mlflow_ui
    run_id = outcome.cycle.run_id
    name = registry.client(config).get_run(run_id).info.run_name
    browser.get(registry.run_ui_url(config, run_id))
    text = wait_for_text(browser, name, "Model registry", "Metrics")
    assert "Observability" not in text  # the GenAI sidebar
    screenshot(browser, "mlflow-run")
    # Its breadcrumb leads to the experiment's runs table, not to the GenAI overview.
    experiment = registry.client(config).get_run(run_id).info.experiment_id
    crumbs = [a for a in browser.find_elements(By.CSS_SELECTOR, "a")
              if (a.get_attribute("href") or "").endswith(f"#/experiments/{experiment}/runs")]
    assert crumbs, "no breadcrumb to the experiment's runs"
    crumbs[0].click()
    wait_until(browser, "the runs table", lambda: "Run Name" in (t := browser.find_element(By.TAG_NAME, "body").text)
               and name in t)
    assert "/overview" not in browser.current_url and "workflowType=genai" not in browser.current_url


def test_the_runs_link_opens_the_runs_table(mlflow_ui, browser):
    config, outcome = mlflow_ui
    browser.get(registry.runs_ui_url(config, outcome.cycle.run_id))
    name = registry.client(config).get_run(outcome.cycle.run_id).info.run_name
    text = wait_for_text(browser, "Run Name", name, "Model registry")
    assert "Observability" not in text and "/overview" not in browser.current_url
    screenshot(browser, "mlflow-runs")
