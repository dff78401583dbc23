"""A real headless browser for the UI tests: Debian's Chromium driven by Selenium through Debian's ChromeDriver.

`make test` installs both when missing (scripts/install-browser); where that was impossible
the tests skip, saying why. Screenshots go to test-artifacts/browser/ for people to look at.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.dags.harness import ROOT

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("PIPELINE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"


def chromium():
    """A headless Chromium that never reaches for the network on its own (this machine has none)."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("BROWSER TESTS SKIPPED: Debian's chromium and chromium-driver are not installed "
                    "(scripts/install-browser needs root or sudo; `apt-get install chromium chromium-driver`)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    driver.profile_dir = profile
    return driver


def quit_browser(driver) -> None:
    driver.quit()
    shutil.rmtree(driver.profile_dir, ignore_errors=True)


def log_in(driver, server, user: str = "admin") -> None:
    """Through Airflow's own login form, as a person would."""
    from selenium.webdriver.common.by import By

    driver.get(f"{server.url}/")
    wait_until(driver, "the login form", lambda: driver.find_elements(By.NAME, "username"))
    driver.find_element(By.NAME, "username").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(server.password(user))
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_until(driver, "the login", lambda: driver.get_cookie("_token"))


def wait_until(driver, what: str, check, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if value := check():
                return value
        except Exception:  # the page is still loading or re-rendering: look again
            pass
        time.sleep(0.5)
    screenshot(driver, f"timeout-{what.replace(' ', '-')}")
    raise TimeoutError(f"{what} did not show within {timeout_s}s on {driver.current_url}")


def visible_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for_text(driver, *texts: str, timeout_s: float = 60) -> str:
    """The page's visible text once it shows every one of ``texts``."""
    return wait_until(driver, f"text {texts!r}", lambda: (t := visible_text(driver)) and all(x in t for x in texts) and t,
                      timeout_s)


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
