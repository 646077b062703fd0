"""Transfer jobs in Orthanc Explorer (the legacy UI of Orthanc 1.10), in a real browser.

The plugin overrides ``GET /jobs``, ``/jobs?expand`` and ``/jobs/{id}``; this test proves
that what it answers is what ``explorer.js`` needs. On ``pagebeforeshow`` of ``#jobs`` the
Explorer does a synchronous ``GET ../jobs?expand`` and renders, per job, an
``<li><a href="#job?uuid=ID"><h1>Type</h1><span class="ui-li-count">State</span>`` followed
by ``<p>ID: <strong>…</strong></p>`` lines (``Content.LocalAet`` etc.), under the divider
"Currently running", "Pending jobs" or "Inactive jobs" according to ``State``. The
``#job?uuid=ID`` page does ``GET ../jobs/ID`` and prints the top-level keys, then one line
per ``Content`` item. A failed request renders nothing and an exception thrown while
rendering (e.g. a job without ``Content``) empties the whole list, so the test waits for
the rendered item itself and then checks the browser console.

Needs Debian's ``chromium`` and ``chromium-driver`` (installed by ``scripts/setup.sh``):
when they are missing the test fails, it is not skipped.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import (
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver import Chrome, ChromeOptions
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from devkit.orthanc_server import REPO, OrthancServer, resources, wait_for
from devkit.wan_proxy import LinkProfile

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = REPO / "artifacts"
#: Bounds of every browser wait: page loads and rendering are local and take < 1 s.
PAGE_LOAD_TIMEOUT = 30.0
RENDER_TIMEOUT = 15.0
CHROME_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1280,1400",
)


@contextlib.contextmanager
def chromium() -> Iterator[Chrome]:
    """Headless Debian Chromium driven by Debian's chromedriver (never downloaded)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install Debian's chromium and "
                    "chromium-driver (scripts/setup.sh does)", pytrace=False)
    profile = tempfile.mkdtemp(prefix="explorer-test-chromium-")
    options = ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver: Chrome | None = None
    try:
        try:
            driver = Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        except WebDriverException as e:
            pytest.fail(f"Chromium could not start ({CHROMIUM} driven by {CHROMEDRIVER}): "
                        f"{e.msg or e}", pytrace=False)
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
        driver.set_script_timeout(RENDER_TIMEOUT)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_until(driver: Chrome, condition: Any, what: str,
               timeout: float = RENDER_TIMEOUT) -> Any:
    """``WebDriverWait`` that fails with the page's visible text instead of a bare timeout."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05,
                             ignored_exceptions=(StaleElementReferenceException,)
                             ).until(condition)
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"timed out after {timeout}s waiting for {what} at {driver.current_url}; "
                    f"page text:\n{body[:3000]}\nbrowser log: {browser_log(driver)}",
                    pytrace=False)


def visible(driver: Chrome, css: str) -> WebElement | None:
    for element in driver.find_elements(By.CSS_SELECTOR, css):
        if element.is_displayed():
            return element
    return None


def browser_log(driver: Chrome) -> list[dict[str, Any]]:
    """Console entries since the last call (chromedriver's ``goog:loggingPrefs`` log)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


def console_errors(entries: list[dict[str, Any]]) -> list[str]:
    """SEVERE console entries, except the browser's own favicon request."""
    return [entry["message"] for entry in entries
            if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]]


def jobs_page_ready(driver: Chrome) -> bool:
    """``#jobs`` is the active page and its list was rendered (the 3 dividers exist)."""
    ready: bool = driver.execute_script(
        "return window.jQuery !== undefined && $.mobile !== undefined &&"
        " $.mobile.activePage !== undefined && $.mobile.activePage.attr('id') === 'jobs' &&"
        " $('#all-jobs > li[data-role=list-divider]').length === 3;")
    return ready


def section_of(driver: Chrome, item: WebElement) -> str:
    """Text of the list divider an item is rendered under."""
    text: str = driver.execute_script(
        "return $(arguments[0]).closest('li').prevAll('li[data-role=list-divider]')"
        ".first().text();", item)
    return text


def job_info_shown(driver: Chrome, job_id: str, *states: str) -> WebElement | None:
    """The detail list once it shows ``job_id`` (filled on ``pagebeforeshow``) in one of
    ``states`` (any state when none is given)."""
    info = visible(driver, "#job-info")
    if info is None:
        return None
    text = info.text
    if f"ID: {job_id}" not in text:
        return None
    return info if not states or any(f"State: {s}" in text for s in states) else None


def shown_buttons(driver: Chrome) -> list[str]:
    """Action buttons of the detail page that are shown (jQuery Mobile wraps each one)."""
    names: list[str] = driver.execute_script(
        "return ['cancel', 'pause', 'resume', 'resubmit'].filter(function (name) {"
        " return $('#job-' + name).closest('.ui-btn').is(':visible'); });")
    return names


def pull(receiver: OrthancServer, ids: list[str]) -> str:
    response = receiver.post("/transfers/pull", json={
        "Resources": resources("Instance", *ids), "Peer": "a", "Compression": "gzip"})
    assert response.status_code == 200, response.text
    job_id: str = response.json()["ID"]
    return job_id


def test_transfer_job_is_shown_in_orthanc_explorer(make_cluster: Any,
                                                   study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"])
    ids = a.upload(study_files[:6])
    job_id = pull(b, ids)
    job = b.wait_job(job_id, timeout=60)
    assert job["State"] == "Success", job
    assert job["Type"] == "PullTransfer"
    ARTIFACTS.mkdir(exist_ok=True)

    with chromium() as driver:
        # The hash URL can be loaded directly: jQuery Mobile shows #jobs at start-up.
        driver.get(f"{b.url}/app/explorer.html#jobs")
        wait_until(driver, jobs_page_ready, "the Jobs page to render its list")
        link_css = f'#all-jobs a[href="#job?uuid={job_id}"]'
        item = wait_until(driver, lambda d: visible(d, link_css),
                          f"the list item of job {job_id}")
        text = item.text
        assert "PullTransfer" in text, text
        assert "Success" in text and f"ID: {job_id}" in text, text
        assert "Creation time:" in text and "Completion time:" in text, text
        assert section_of(driver, item) == "Inactive jobs"
        driver.save_screenshot(str(ARTIFACTS / "explorer-jobs.png"))
        jobs_log = browser_log(driver)
        assert not console_errors(jobs_log), f"JavaScript errors on #jobs: {jobs_log}"

        item.click()
        info = wait_until(driver, lambda d: job_info_shown(d, job_id), "the job's detail page")
        assert driver.current_url.endswith(f"#job?uuid={job_id}"), driver.current_url
        details = info.text
        assert "Type: PullTransfer" in details and "State: Success" in details, details
        assert "Peer: a" in details, details
        assert f"TotalInstances: {len(ids)}" in details, details
        assert "Compression: gzip" in details, details
        # A finished job offers no action: Cancel/Pause/Resume/Resubmit are all hidden.
        assert shown_buttons(driver) == []
        driver.save_screenshot(str(ARTIFACTS / "explorer-job.png"))
        job_log = browser_log(driver)
        assert not console_errors(job_log), f"JavaScript errors on #job: {job_log}"


def test_running_transfer_job_is_paused_and_resumed_from_orthanc_explorer(
        make_cluster: Any, make_proxy: Any, study_files: list[bytes]) -> None:
    """A job held Running by a silent link: listed as running, then paused and resumed."""
    a, b = make_cluster(["a", "b"], config={"Transfers": {"BucketSize": 512}})
    link = make_proxy(a, LinkProfile("slow", delay=0.005, bandwidth=100e6))
    b.request("PUT", "/peers/a", json={"Url": link.url}).raise_for_status()
    ids = a.upload(study_files[:6])
    link.stall()
    try:
        job_id = pull(b, ids)
        wait_for(lambda: b.get_json(f"/jobs/{job_id}")["State"] == "Running", 10, "Running")
        with chromium() as driver:
            driver.get(f"{b.url}/app/explorer.html#jobs")
            wait_until(driver, jobs_page_ready, "the Jobs page to render its list")
            item = wait_until(driver,
                              lambda d: visible(d, f'#all-jobs a[href="#job?uuid={job_id}"]'),
                              f"the list item of job {job_id}")
            text = item.text
            assert "PullTransfer" in text and "Running" in text, text
            assert "Priority: 0" in text and "Progress: " in text, text
            assert section_of(driver, item) == "Currently running"

            item.click()
            wait_until(driver, lambda d: job_info_shown(d, job_id, "Running"),
                       "the running job's detail page")
            assert shown_buttons(driver) == ["cancel", "pause"]
            # explorer.js POSTs ../jobs/{id}/pause, then reloads the page.
            driver.find_element(By.CSS_SELECTOR, "#job-pause").click()
            wait_until(driver, lambda d: job_info_shown(d, job_id, "Paused"),
                       "the detail page to show the paused job")
            assert b.get_json(f"/jobs/{job_id}")["State"] == "Paused"
            assert shown_buttons(driver) == ["resume"]
            link.release()

            driver.find_element(By.CSS_SELECTOR, "#job-resume").click()
            # Resumed jobs go Pending, then Running; the reloaded page shows either (or the end).
            wait_until(driver,
                       lambda d: job_info_shown(d, job_id, "Pending", "Running", "Success"),
                       "the detail page to show the resumed job")
            assert "resume" not in shown_buttons(driver)
            log = browser_log(driver)
            assert not console_errors(log), f"JavaScript errors: {log}"
    finally:
        link.release()
    assert b.wait_job(job_id, timeout=60)["State"] == "Success"
    assert b.instance_md5s() == a.instance_md5s()


@pytest.mark.parametrize("mode", ["push", "pull"])
def test_transfers_button_sends_a_study_from_orthanc_explorer(
        make_cluster: Any, study_files: list[bytes], mode: str) -> None:
    """The "Transfers accelerator" button on a study page: choose a peer, land on the job
    (the push job, or in pull mode the local job tracking the peer's pull)."""
    a, b = make_cluster(["a", "b"], remote_self=(mode == "pull"))
    a.request("PUT", "/peers/plain", json={"Url": "http://127.0.0.1:9/"})   # no plugin there
    ids = a.upload(study_files[:6])
    study = a.get_json(f"/instances/{ids[0]}/study")["ID"]
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as driver:
        driver.get(f"{a.url}/app/explorer.html#study?uuid={study}")
        button = wait_until(driver, lambda d: visible(d, "#study-transfers"),
                            "the Transfers accelerator button")
        assert button.text.strip() == "Transfers accelerator"
        button.click()
        target = wait_until(driver, lambda d: visible(d, '.transfers-peer[data-peer="b"]'),
                            "peer b in the chooser")
        disabled = visible(driver, '.transfers-peer[data-peer="plain"]')
        assert disabled is not None and not disabled.is_enabled()   # greyed out: no plugin
        driver.save_screenshot(str(ARTIFACTS / f"explorer-button-{mode}.png"))
        target.click()
        wait_until(driver, lambda d: "#job?uuid=" in d.current_url, "the job page")
        job_id = driver.current_url.split("#job?uuid=")[1]
        job = a.wait_job(job_id, timeout=60)
        assert job["State"] == "Success", job
        assert job["Type"] == ("PushTransfer" if mode == "push" else "PullTransferTracking")
        driver.refresh()
        wait_until(driver, lambda d: job_info_shown(d, job_id, "Success"), "the finished job")
        driver.save_screenshot(str(ARTIFACTS / f"explorer-button-{mode}-job.png"))
        log = browser_log(driver)
        assert not console_errors(log), f"JavaScript errors: {log}"
    assert b.instance_md5s() == a.instance_md5s()
