"""The control plane's dashboard in headless Chromium (Debian's chromium and chromedriver,
driven by selenium from PyPI), against a running `ward demo`.

Checks, each waited for (the page polls every 2 s): the demo's workloads and the edges
between them with their security; a forbidden call made here shows up among the denials
with the deciding policy — its request id, which carries markup, shown as text and never
run; the anomalies and their mark on the graph; "who can call" for accounts; and an SVID
rotation changing a workload's serial. On failure: a screenshot and the page source next
to it, and exit status 1.

Usage: dashboard.py URL WEB_OUTBOUND SHOTS_DIR
"""

import os
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

URL, WEB_OUTBOUND, SHOTS = sys.argv[1], sys.argv[2], sys.argv[3]
ID = "spiffe://bank.local/ns/bank/sa/"
PROBE = '<img src=x onerror="document.title=\'pwned\'">'


def wait(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except Exception:  # the DOM is redrawn under us: try again
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {what}")
        time.sleep(0.25)


def browser():
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1800",
                f"--user-data-dir={tempfile.mkdtemp(prefix='ward-chromium-')}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def forbidden_call():
    """DELETE on accounts from web (web may only GET): denied by accounts' sidecar."""
    req = urllib.request.Request(f"http://{WEB_OUTBOUND}/accounts/77", method="DELETE",
                                 headers={"x-request-id": PROBE})
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("the forbidden call was allowed")
    except urllib.error.HTTPError as e:
        assert e.code == 403, e.code


def row_texts(driver, table):
    return [r.text for r in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")]


def workloads(driver):
    """{name: (serial, row text, cells)} as the page shows them now."""
    out = {}
    for r in driver.find_elements(By.CSS_SELECTOR, "#workloads tbody tr"):
        cells = [c.text for c in r.find_elements(By.TAG_NAME, "td")]
        out[r.get_attribute("data-id").rsplit("/", 1)[-1]] = (r.get_attribute("data-serial"), r.text, cells)
    return out


def edge(driver, source, destination):
    """(security, label) of the edge drawn from source to destination, or None."""
    found = driver.find_elements(
        By.CSS_SELECTOR, f'#graph g.edge[data-source="{source}"][data-destination="{destination}"]')
    return (found[0].get_attribute("data-security"), found[0].text) if found else None


# The page redraws every 2 s, so an element found now may be gone a moment later: every
# read happens inside wait(), which takes the page as it is and tries again.
def check(driver):
    driver.get(URL)
    assert driver.title == "ward mesh", driver.title

    # The workloads, each with its SVID serial, and the edges between them.
    names = {"web", "accounts", "ledger", "gateway"}
    shown = wait("the demo's workloads", lambda: (lambda w: w if names <= set(w) else None)(workloads(driver)))
    for name in names:
        serial, text, _ = shown[name]
        assert len(serial) >= 16, text
        assert "ok" in text or "renewing" in text, text
    for source, destination in [("gateway", "web"), ("web", "accounts"), ("accounts", "ledger")]:
        security, _ = wait(f"a rate on the edge {source} -> {destination}", lambda: (
            lambda e: e if e and "/s" in e[1] else None)(edge(driver, ID + source, ID + destination)))
        assert security == "mtls", (source, destination, security)
    assert wait("the clients' edge", lambda: edge(driver, "external", ID + "gateway"))[0] == "tls"

    # A forbidden call: among the denials, with the policy that decided; its request id
    # (markup) is shown as text. The demo's own denials are many a second: the operator finds
    # ours with the search box.
    forbidden_call()
    driver.find_element(By.ID, "denial-filter").send_keys("onerror")
    cells = wait("our denial on the page", lambda: next((
        [c.text for c in r.find_elements(By.TAG_NAME, "td")]
        for r in driver.find_elements(By.CSS_SELECTOR, "#denials tbody tr") if PROBE in r.text), None))
    assert cells[1] == ID + "web" and cells[2] == ID + "accounts", cells
    assert cells[3] == "DELETE /accounts/77", cells
    assert cells[4].startswith("default:deny"), cells
    assert not driver.find_elements(By.CSS_SELECTOR, "#denials img"), "markup was run"
    assert driver.title == "ward mesh", driver.title

    # The demo's forbidden calls are many a second: a denial spike, marked on the graph.
    wait("a denial spike", lambda: any("denial spike" in t for t in row_texts(driver, "anomalies")))
    wait("an anomaly mark on the graph",
         lambda: driver.find_elements(By.CSS_SELECTOR, "#graph g.node.anomaly"))

    # Who can call accounts: web (GET only), nobody else.
    Select(driver.find_element(By.ID, "whocan")).select_by_value(ID + "accounts")
    reach = wait("who can call accounts", lambda: {
        r.get_attribute("data-caller"): r.text
        for r in driver.find_elements(By.CSS_SELECTOR, "#reach tbody tr")} or None)
    assert "some" in reach[ID + "web"] and "web-reads-accounts" in reach[ID + "web"], reach
    assert "none" in reach[ID + "gateway"], reach
    wait("the rules that apply", lambda: "ALLOW bank/web-reads-accounts rule 0"
         in driver.find_element(By.ID, "rules").text)

    # A rotation: web's serial changes on the page, and the rotation is counted.
    before = shown["web"][0]
    rotated = wait("web's SVID to rotate", lambda: (
        lambda w: w if w[0] != before else None)(workloads(driver)["web"]), timeout=90)
    assert int(rotated[2][6]) >= 1, rotated


def main():
    driver = browser()
    try:
        check(driver)
        print("dashboard: all checks passed")
        return 0
    except Exception as e:  # noqa: BLE001 - any failure: keep the evidence
        os.makedirs(SHOTS, exist_ok=True)
        shot = os.path.join(SHOTS, "dashboard-failure.png")
        driver.save_screenshot(shot)
        with open(os.path.join(SHOTS, "dashboard-failure.html"), "w") as f:
            f.write(driver.page_source)
        print(f"dashboard: FAILED: {e!r}; screenshot {shot}")
        return 1
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
