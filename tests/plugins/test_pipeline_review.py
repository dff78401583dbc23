"""The review plugin on a real api-server: every route needs an Airflow login, reports only by cycle id, sandboxed."""

from __future__ import annotations

import html
import urllib.error
import urllib.request
from datetime import date

import pytest
import sqlalchemy as sa

from orchestration.servers import UNSCHEDULED, AirflowServer
from pipeline.config import load_config
from pipeline.cycle import run_cycle
from pipeline.validate import propose_suite, write_suite
from tests.conftest import config_dict, small_frame, write_config

pytestmark = pytest.mark.timeout(600)
HOSTILE_COLUMN = "</script><script>alert(1)</script>"
HOSTILE_VALUE = "<img src=x onerror=alert(2)>"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    root = tmp_path_factory.mktemp("review-ui")
    # Names from the data end up in every page and report: make them hostile.
    frame = small_frame(2000, days=10).rename(columns={"color": HOSTILE_COLUMN})
    frame[HOSTILE_COLUMN] = frame[HOSTILE_COLUMN].replace({"red": HOSTILE_VALUE})
    engine = sa.create_engine(f"sqlite:///{root / 'warehouse.db'}")
    frame.to_sql("events", engine, index=False)
    engine.dispose()
    features = {"numeric": ["x_num", "y_num"], "categorical": [HOSTILE_COLUMN]}
    raw_source = config_dict(root)["source"]
    # No scheduled runs: the lists hold exactly the cycles the tests record. One trial at a time: the seed's draws
    # repeat, and with them the sampled C that beats the fixed parameters (the version page shows "best params C=").
    config_path = write_config(root, training={"family": "logistic_regression", "params": {},
                                               "search": {"trials": 4, "parallel": 1}},
                               source={**raw_source, "features": features}, orchestration=UNSCHEDULED)
    config = load_config(config_path, environ={})
    write_suite(propose_suite(config, frame), config.validation.suite)
    cycle = run_cycle(config, date(2026, 1, 10))
    with AirflowServer(root / "airflow-home", config_path) as server:
        server.cycle_id, server.config_path = cycle.cycle.cycle_id, config_path
        server.token_admin = server.token("admin")
        yield server


def get(server, path: str, token: str | None = None, cookie: str | None = None):
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = f"_token={cookie}"
    request = urllib.request.Request(f"{server.url}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


@pytest.mark.parametrize("path", ["/pipeline/drift", "/pipeline/drift/x", "/pipeline/reports/x/drift.html"])
def test_every_route_needs_a_login(airflow, path):
    assert get(airflow, path)[0] == 401
    assert get(airflow, path, token="not-a-token")[0] == 403


def test_the_api_docs_are_not_served(airflow):
    for path in ("/pipeline/docs", "/pipeline/openapi.json", "/pipeline/redoc"):
        assert get(airflow, path, token=airflow.token_admin)[0] == 404


def test_the_drift_page_lists_the_cycle_for_a_logged_in_user(airflow):
    for credentials in ({"token": airflow.token_admin}, {"cookie": airflow.token_admin}):
        status, headers, body = get(airflow, "/pipeline/drift", **credentials)
        assert status == 200 and airflow.cycle_id in body and "2026-01-10" in body
        assert "default-src 'none'" in headers["content-security-policy"]


def test_a_report_is_served_sandboxed(airflow):
    status, headers, body = get(airflow, f"/pipeline/reports/{airflow.cycle_id}/drift.html", token=airflow.token_admin)
    assert status == 200 and "<html" in body.lower()
    assert headers["content-security-policy"].startswith("sandbox allow-scripts;")
    assert "allow-same-origin" not in headers["content-security-policy"]
    status, _, page = get(airflow, f"/pipeline/drift/{airflow.cycle_id}", token=airflow.token_admin)
    assert status == 200 and '<iframe class="report" sandbox="allow-scripts"' in page


@pytest.mark.parametrize(
    "path, expected",
    [
        pytest.param("/pipeline/validation", ["{cycle}", "passed", "warnings", "pending approval"], id="validation-list"),
        pytest.param("/pipeline/validation/{cycle}", ["Validation PASSED", "column &#x27;x_num&#x27;", "full report",
                                                      "← all validations"], id="validation-detail"),
        pytest.param("/pipeline/models", ["v1", "pending approval", "roc_auc", 'href="/pipeline/models/1"',
                                          "page 1 of 1 (1 version)"], id="models"),
        # v1 has no champion to be compared with: its own k-fold folds are plotted all the same.
        pytest.param("/pipeline/models/1", ["v1: roc_auc per fold", "v1 k-fold (held-out fold)", "<svg",
                                            "the floors alone decided", "← all versions", "Search: roc_auc by trial",
                                            "tuned: 4 trials (", "best so far", "<td>training.params</td>", "C="],
                     id="version"),
        pytest.param("/pipeline/approvals", ['href="/pipeline/models/1"', "pipeline promote", "k-fold mean"],
                     id="pending-approvals"),
        pytest.param("/pipeline/drift", ["Drift per feature and cycle", "x_num · wasserstein, threshold 0.1", "<svg"],
                     id="drift-history"),
    ],
)
def test_pages_show_what_was_recorded(airflow, path, expected):
    status, headers, body = get(airflow, path.format(cycle=airflow.cycle_id), token=airflow.token_admin)
    assert status == 200
    for text in expected:
        assert text.format(cycle=airflow.cycle_id) in body, text
    assert "http://" not in body.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in body  # offline


@pytest.mark.parametrize("path", ["/pipeline/drift", "/pipeline/validation", "/pipeline/validation/{cycle}",
                                  "/pipeline/models", "/pipeline/models/1", "/pipeline/approvals",
                                  "/pipeline/drift/{cycle}"])
def test_every_link_of_a_page_into_the_review_pages_answers(airflow, path):
    import re

    _, _, body = get(airflow, path.format(cycle=airflow.cycle_id), token=airflow.token_admin)
    links = {link.split("#")[0] for link in re.findall(r'(?:href|src)="(/pipeline/[^"]*)"', body)}

    assert links
    for link in links:
        assert get(airflow, html.unescape(link), token=airflow.token_admin)[0] == 200, link


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/pipeline/reports/{cycle}/..%2F..%2Fwarehouse.db", id="encoded-dot-dot"),
        pytest.param("/pipeline/reports/{cycle}/%252e%252e%252fwarehouse.db", id="double-encoded"),
        pytest.param("/pipeline/reports/..%2F{cycle}/drift.html", id="encoded-dot-dot-in-cycle"),
        pytest.param("/pipeline/reports/%2Fetc/passwd", id="absolute"),
        pytest.param("/pipeline/reports/{cycle}/current.parquet", id="not-a-report"),
        pytest.param("/pipeline/reports/{cycle}/config.yaml", id="another-file-of-the-cycle"),
        pytest.param("/pipeline/drift/no-such-cycle", id="unrecorded-cycle"),
        pytest.param("/pipeline/models/99", id="unregistered-version"),
        pytest.param("/pipeline/models/..%2F1", id="not-a-version"),
    ],
)
def test_nothing_outside_the_recorded_reports_is_served(airflow, path):
    status, _, body = get(airflow, path.format(cycle=airflow.cycle_id), token=airflow.token_admin)
    assert status == 404, body[:200]


@pytest.mark.parametrize("path", ["/pipeline/drift", "/pipeline/validation/{cycle}"])
def test_names_from_the_data_are_escaped_in_pages(airflow, path):
    _, _, body = get(airflow, path.format(cycle=airflow.cycle_id), token=airflow.token_admin)
    assert "<script>" not in body and "<img src=x" not in body
    if "validation" in path:  # every expectation names its column
        assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_a_report_quoting_hostile_names_is_sandboxed(airflow):
    _, headers, body = get(airflow, f"/pipeline/reports/{airflow.cycle_id}/drift.html", token=airflow.token_admin)
    assert "alert(1)" in body  # the report quotes the column; the policy keeps it out of Airflow's origin
    assert headers["content-security-policy"].startswith("sandbox allow-scripts;")


def test_a_symlink_planted_in_a_cycle_is_not_followed(airflow, tmp_path):
    from pipeline import catalog

    report = catalog.report_file(load_config(airflow.config_path, environ={}), airflow.cycle_id, "validation.html")
    secret = tmp_path / "secret.html"
    secret.write_text("<p>outside the storage root</p>")
    original = report.read_bytes()
    report.unlink()
    report.symlink_to(secret)
    try:
        status, _, body = get(airflow, f"/pipeline/reports/{airflow.cycle_id}/validation.html", token=airflow.token_admin)
        assert status == 404 and "outside the storage root" not in body
    finally:
        report.unlink()
        report.write_bytes(original)


def test_a_hostile_report_stays_out_of_airflows_origin_in_a_browser(airflow):
    """The report's injected script runs (Evidently needs scripts), but sandboxed: no dialog, no cookie, no origin."""
    from selenium.webdriver.common.by import By

    from tests.plugins.browser import chromium, log_in, quit_browser, screenshot, wait_until

    driver = chromium()
    try:
        log_in(driver, airflow)
        driver.get(f"{airflow.url}/pipeline/drift/{airflow.cycle_id}")
        frame = wait_until(driver, "the report frame", lambda: driver.find_elements(By.CSS_SELECTOR, "iframe"))[0]
        driver.switch_to.frame(frame)
        wait_until(driver, "the rendered report", lambda: "x_num" in driver.find_element(By.TAG_NAME, "body").text, 90)
        assert "alert(1)" in driver.page_source  # the hostile name is in the report...
        assert_contained(driver, "framed")  # ...but its script runs in no origin
        driver.switch_to.default_content()
        screenshot(driver, "hostile-report-framed")
        driver.get(f"{airflow.url}/pipeline/reports/{airflow.cycle_id}/drift.html")
        wait_until(driver, "the report", lambda: "x_num" in driver.find_element(By.TAG_NAME, "body").text, 90)
        assert_contained(driver, "opened directly")
    finally:
        quit_browser(driver)


def assert_contained(driver, where: str) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    origin_and_cookie = "return [self.origin, (() => { try { return document.cookie } catch (e) { return e.name } })()]"
    assert driver.execute_script(origin_and_cookie) == ["null", "SecurityError"], where
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - a dialog would mean the script ran with the page's powers


@pytest.fixture(scope="module")
def many_cycles(airflow):
    """2,000 more cycles in the index (copies of the real one on earlier days): the lists must page, filter and search."""
    from dataclasses import replace
    from datetime import timedelta

    from pipeline import catalog, cycle_index

    config = load_config(airflow.config_path, environ={})
    [real] = catalog.cycle_page(config).cycles
    copies = [replace(real, cycle_id=f"bulk-{i:04d}", kind="monitor" if i % 2 else "retrain",
                      as_of=date(2020, 1, 1) + timedelta(days=i // 2), status="drift_detected" if i % 4 == 1 else "no_drift")
              for i in range(2000)]
    with cycle_index._engine(config.promotion.database_url).begin() as conn:
        cycle_index._replace(conn, config, copies)
    return airflow


@pytest.mark.parametrize("path, shown, not_shown", [
    pytest.param("/pipeline/drift", ["page 1 of 41 (2,001 cycles)", "older →", "{cycle}"], ["← newer"], id="first-page"),
    pytest.param("/pipeline/drift?page=3", ["page 3 of 41", "← newer", "older →", "bulk-1899"], ["{cycle}"],
                 id="third-page"),
    pytest.param("/pipeline/validation?page=41", ["page 41 of 41", "bulk-0000", "← newer"], ["older →"], id="last-page"),
    pytest.param("/pipeline/drift?kind=monitor&status=drift_detected&since=2022-01-01&until=&q=",
                 ["page 1 of 3 (134 cycles)", "bulk-1997", 'value="2022-01-01"'], ["bulk-1998", "{cycle}"],
                 id="filtered"),
    pytest.param("/pipeline/validation?q=BULK-0001", ["(1 cycle)", "bulk-0001"], ["bulk-0002"], id="search"),
])
def test_lists_of_2000_cycles_page_filter_and_search(many_cycles, path, shown, not_shown):
    status, _, body = get(many_cycles, path, token=many_cycles.token_admin)

    assert status == 200
    for text in shown:
        assert text.format(cycle=many_cycles.cycle_id) in body, text
    for text in not_shown:
        assert text.format(cycle=many_cycles.cycle_id) not in body, text


def test_a_list_refuses_a_date_that_is_not_one(many_cycles):
    status, _, body = get(many_cycles, "/pipeline/drift?since=yesterday", token=many_cycles.token_admin)
    assert status == 400 and "since must be a date (YYYY-MM-DD)" in body
