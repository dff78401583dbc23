"""The review pages in a real browser, inside a real Airflow, on demo data from three cycles.

The story: a first champion (v1, approved by carol with the CLI), then `monitor_drift`
finds drift as of 2026-05-28, and its asset event starts `retrain_model`, whose v2 waits
under Required Actions. A reviewer logs in, reads every page, opens the drift report,
follows the extra link from the drift task and the pending approval into Airflow.
Screenshots land in test-artifacts/browser/.
"""

from __future__ import annotations

from datetime import date

import pytest

from orchestration.servers import UNSCHEDULED, AirflowServer, dags_parsed, finished_state, wait_for
from pipeline import approval
from pipeline.config import load_config
from pipeline.cycle import run_cycle
from tests.dags.harness import dag_config
from tests.dags.server import asset_triggered_run, task_state
from tests.plugins.browser import chromium, log_in, quit_browser, screenshot, wait_for_text, wait_until

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def story(tmp_path_factory, warehouse):
    import airflow_client.client as ac

    directory = tmp_path_factory.mktemp("review-browser")
    config_path = dag_config(directory / "stores", warehouse, orchestration=UNSCHEDULED)
    config = load_config(config_path)
    # The first champion's parameters come from a search (its version page plots it); the DAG's runs train untuned.
    tuned = config.model_copy(update={"training": config.training.model_copy(update={
        "search": config.training.search.model_copy(update={"trials": 6})})})
    first = run_cycle(tuned, date(2026, 2, 26))
    approval.decide_version(config, first.version.version,
                            approval.reviewer_decision(True, "carol", "cli", "first champion, reviewed by hand"))
    with AirflowServer(directory / "airflow-home", config_path) as server:
        admin = server.client("admin")
        runs = ac.DagRunApi(admin)
        wait_for("the DAGs parsed", lambda: dags_parsed(admin), server, timeout_s=120)
        monitor = runs.trigger_dag_run("monitor_drift", ac.TriggerDAGRunPostBody(
            logical_date=None, conf={"as_of": "2026-05-28"}))
        assert wait_for("monitor finished", lambda: finished_state(runs, "monitor_drift", monitor.dag_run_id),
                        server) == "success"
        server.monitor_run = monitor.dag_run_id
        server.admin, server.runs, server.config = admin, runs, config
        yield server


@pytest.fixture(scope="module")
def browser(story):
    driver = chromium()
    try:
        log_in(driver, story)
        yield driver
    finally:
        quit_browser(driver)


def open_page(driver, server, page: str) -> None:
    driver.get(f"{server.url}/pipeline/{page}")


def test_airflow_menu_opens_the_review_pages(story, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{story.url}/")
    wait_until(browser, "Airflow's Browse menu", lambda: browser.find_elements(By.XPATH, "//button[.//*[text()='Browse'] or text()='Browse']"))[0].click()
    entries = wait_until(browser, "the review entries", lambda: browser.find_elements(By.XPATH, "//a[@href='/pipeline/drift']"))
    assert entries[0].text.strip() == "Drift"
    for label, page in (("Validation", "validation"), ("Models", "models"), ("Pending approvals", "approvals")):
        assert browser.find_element(By.XPATH, f"//a[@href='/pipeline/{page}']").text.strip() == label
    screenshot(browser, "0-airflow-menu")


def test_drift_page_lists_cycles_and_plots_the_history(story, browser):
    from selenium.webdriver.common.by import By

    open_page(browser, story, "drift")
    text = wait_for_text(browser, "2026-05-28", "monitor", "payment_method", "Drift per feature and cycle")
    assert "2026-05-28 monitor" in text  # a column of the heat map
    monitor_row = browser.find_element(By.XPATH, "//tr[td[1]='2026-05-28' and td[2]='monitor']").text
    assert "degraded" in monitor_row and "data_usage_gb" in monitor_row and "monthly_charges" in monitor_row
    assert "2026-02-13 – 2026-02-26" in monitor_row  # the reference window: champion v1's training window
    assert "promoted" in browser.find_element(By.XPATH, "//tr[td[1]='2026-02-26' and td[2]='retrain']").text
    # The heat map first: a square per feature and cycle, the drifted ones ringed, each row linked to its detail.
    heat = browser.find_element(By.CSS_SELECTOR, "svg[aria-label='drift per feature and cycle']")
    assert len(heat.find_elements(By.CSS_SELECTOR, "rect[stroke]")) >= 2
    screenshot(browser, "1-drift")
    detail = browser.find_element(By.ID, "feature-1")  # monthly_charges
    detail.find_element(By.TAG_NAME, "summary").click()
    chart = detail.find_element(By.TAG_NAME, "svg")
    assert chart.find_elements(By.CSS_SELECTOR, "line.threshold") and "Wasserstein distance" in chart.text
    assert detail.text.startswith("monthly_charges · wasserstein, threshold 0.1 · drifted in ")
    browser.execute_script("arguments[0].scrollIntoView()", detail)
    screenshot(browser, "1b-drift-feature")


def test_a_drift_report_opens_sandboxed(story, browser):
    from selenium.webdriver.common.by import By

    open_page(browser, story, "drift")
    wait_for_text(browser, "2026-05-28")
    row = browser.find_element(By.XPATH, "//tr[td[1]='2026-05-28' and td[2]='monitor']")
    row.find_element(By.LINK_TEXT, "report").click()
    report = wait_until(browser, "the report frame", lambda: browser.find_elements(By.CSS_SELECTOR, "iframe[sandbox]"))[0]
    browser.switch_to.frame(report)
    wait_for_text(browser, "payment_method", "data_usage_gb", timeout_s=90)  # Evidently renders with its scripts
    assert browser.execute_script("return self.origin") == "null"  # an opaque origin, not Airflow's
    browser.switch_to.default_content()
    screenshot(browser, "2-drift-report")


def test_validation_page_shows_every_expectation(story, browser):
    from selenium.webdriver.common.by import By

    open_page(browser, story, "validation")
    wait_for_text(browser, "2026-05-28", "passed")
    browser.find_element(By.PARTIAL_LINK_TEXT, "monitor").click()
    wait_for_text(browser, "Validation PASSED", "sample values", "payment_method")
    first, *rest = [row.text for row in browser.find_elements(By.XPATH, "//tr[td]")]
    # Failed first, with its count and sample values: the new payment method is a warning, not a stop.
    assert first.startswith("failed (warning)") and "payment_method" in first and "crypto" in first
    assert len(rest) > 30 and all(row.startswith("passed") for row in rest)
    screenshot(browser, "3-validation")


def test_pending_approval_leads_to_required_actions(story, browser):
    from selenium.webdriver.common.by import By

    triggered = wait_for("a drift-triggered retrain run", lambda: asset_triggered_run(story.runs), story, timeout_s=120)
    wait_for("the review waiting", lambda: task_state(story.admin, "retrain_model", triggered, "review") == "awaiting_input"
             or None, story, timeout_s=420)
    open_page(browser, story, "approvals")
    wait_for_text(browser, "Required Actions", "drift")
    screenshot(browser, "4-pending-approvals")
    browser.find_element(By.LINK_TEXT, "Required Actions").click()
    wait_until(browser, "Airflow's Required Actions page", lambda: "/required_actions" in browser.current_url)
    text = wait_for_text(browser, "Promote demo_churn v2 (vs champion v1, as of 2026-05-28)", timeout_s=90)
    assert "Approve" in text and "Reject" in text
    screenshot(browser, "5-required-actions")
    # The approval's evidence, and its links into the review pages (not server paths, not MLflow's port).
    wait_for_text(browser, "Candidate and champion v1 on the same", "change class from the champion",
                  "Feature importance, the largest changes", timeout_s=60)
    links = {a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a[href*='/pipeline/']")}
    assert {link.split("/pipeline/")[1].split("/")[0] for link in links} >= {"drift", "validation", "models"}, links
    for link in sorted(links):
        browser.get(link)
        wait_for_text(browser, "Airflow", "Pending approvals")  # the review layout, not an error


def test_models_page_shows_aliases_gate_and_history(story, browser):
    from selenium.webdriver.common.by import By

    open_page(browser, story, "models")
    text = wait_for_text(browser, "Alias history", "page 1 of 1 (2 versions)")
    rows = {row.text.split()[0]: row.text for row in browser.find_elements(By.XPATH, "(//table)[1]//tr[td]")}
    assert "champion" in rows["v1"] and "pending approval" in rows["v2"] and "roc_auc" in rows["v2"]
    assert "Airflow run" in rows["v2"]  # lineage of the drift-triggered version
    assert "0.80" in rows["v2"] and "0.8000000" not in rows["v2"]  # rounded
    assert "carol" in text and "promoted v1 (first champion)" in text and "first champion, reviewed by hand" in text
    screenshot(browser, "6-models")
    # The same page for a reader whose system asks for dark pages.
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        background = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(20, 24, 31)"
        screenshot(browser, "6b-models-dark")
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    browser.find_element(By.LINK_TEXT, "v1").click()
    # v1 was the first champion: its own folds are plotted, not "nothing recorded".
    text = wait_for_text(browser, "v1: roc_auc per fold", "v1 k-fold (held-out fold)", "the floors alone decided")
    assert "Nothing recorded yet" not in text


def test_a_version_page_holds_the_evidence_against_the_champion(story, browser):
    from selenium.webdriver.common.by import By

    open_page(browser, story, "models/2")
    text = wait_for_text(browser, "v2: roc_auc per fold", "Candidate and champion v1 on the same", "true positives",
                         "perfectly calibrated", "time bucket of the compared rows")
    # v1 trained weeks before v2's window: each held-out fold is all compared rows, drawn once, not twice.
    assert "v2 k-fold (held-out fold, none seen by the champion)" in text and "champion v1 on the same rows" in text
    assert "v2 on rows the champion never saw" not in text
    metrics = {row.text.split()[0]: row.text for row in browser.find_elements(By.XPATH, "(//table)[2]//tr[td]")}
    assert set(metrics) == {"roc_auc", "log_loss", "f1"}
    assert "Feature importance: the largest changes" in text and "rank candidate / champion" in text
    screenshot(browser, "6c-version")
    importance = browser.find_element(By.XPATH, "//h4[starts-with(., 'Feature importance')]")
    browser.execute_script("arguments[0].scrollIntoView()", importance)
    rows = browser.find_elements(By.XPATH, "//h4[starts-with(., 'Feature importance')]/following::table[1]//tr[td]")
    assert 1 <= len(rows) <= 8 and all(len(row.find_elements(By.TAG_NAME, "td")) == 5 for row in rows)
    screenshot(browser, "6d-version-importance")


def test_a_tuned_versions_page_plots_its_search(story, browser):
    from selenium.webdriver.common.by import By

    open_page(browser, story, "models/1")
    wait_for_text(browser, "Search: roc_auc by trial", "tuned: 6 trials (", "best so far",
                         "pruned: mean over the folds it ran", "parameters")
    chart = browser.find_element(By.XPATH, "//h2[starts-with(., 'Search')]/following::*[name()='svg'][1]")
    assert chart.is_displayed() and len(chart.find_elements(By.TAG_NAME, "circle")) >= 6 + 1
    browser.execute_script("arguments[0].scrollIntoView()", chart)
    browser.find_element(By.XPATH, "//summary[.='Trials']").click()
    rows = browser.find_elements(By.XPATH, "//summary[.='Trials']/following::table[1]//tr[td]")
    assert len(rows) == 6 and rows[0].text.split()[:2] in (["0", "complete"], ["0", "★"])
    assert "training.params" in rows[0].text
    screenshot(browser, "6e-version-search")


def test_the_drift_task_links_to_its_report(story, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{story.url}/dags/monitor_drift/runs/{story.monitor_run}/tasks/drift/details")
    link = wait_until(browser, "the Drift report extra link",
                      lambda: browser.find_elements(By.XPATH, "//a[normalize-space()='Drift report']"))[0]
    screenshot(browser, "7-extra-link")
    before = set(browser.window_handles)
    link.click()
    if opened := set(browser.window_handles) - before:  # a new tab, if the UI chose one
        browser.switch_to.window(opened.pop())
    wait_until(browser, "the cycle's drift page", lambda: "/pipeline/drift/demo_churn-monitor-" in browser.current_url)
    assert browser.find_elements(By.CSS_SELECTOR, "iframe[sandbox='allow-scripts']")
