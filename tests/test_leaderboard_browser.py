"""The leaderboard page in a real headless browser (Debian's chromium + chromium-driver, Selenium).

Needs the Debian packages `chromium` and `chromium-driver`; without them this test FAILS
(it is part of what the leaderboard must show), naming the packages to install.
"""
from __future__ import annotations

import shutil
import tempfile

import httpx
import pytest

from test_leaderboard_helpers import Server, bundle_for, new_token

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-dev-shm-usage", "--window-size=1400,1000"]


def _browser(profile: str):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or shutil.which("chromium-driver")
    if not chromium or not driver:
        pytest.fail("headless browser test needs Debian's chromium and chromedriver: "
                    "apt-get install -y chromium chromium-driver", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for f in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(f)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


@pytest.fixture
def board(tmp_path):
    db = tmp_path / "lb.sqlite"
    token = new_token(db, "browser-team")
    server = Server(db).start()
    names = []
    for i, base in enumerate([0.30, 0.55, 0.12, 0.41, 0.25, 0.48]):
        names.append(f"method {i} <i>")
        r = httpx.post(server.url + "/api/submissions", content=bundle_for(tmp_path, f"b{i}", name=names[-1],
                                                                           seed=i, base=base),
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/zip"})
        assert r.status_code == 201, r.text
    yield server, names
    server.stop()


def test_page_in_headless_chromium(board):
    from selenium.webdriver.common.by import By

    server, names = board
    profile = tempfile.mkdtemp(prefix="lb-chromium-")
    drv = _browser(profile)
    try:
        drv.set_page_load_timeout(60)
        drv.get(server.url + "/leaderboard/micro/filtering")
        rows = drv.find_elements(By.CSS_SELECTOR, "table.board tbody tr")
        assert len(rows) == 6
        avg = [float(r.find_element(By.CSS_SELECTOR, 'td[data-col="Average"]').text) for r in rows]
        assert avg == sorted(avg, reverse=True) and avg[0] > avg[-1]
        shown = [r.find_element(By.CSS_SELECTOR, "td.method").text for r in rows]
        assert sorted(shown) == sorted(names)  # the <i> shows as text, not as markup
        plots = drv.find_elements(By.CSS_SELECTOR, "svg.plot")
        assert len(plots) == 2
        for svg in plots:
            box = drv.execute_script("const b = arguments[0].getBoundingClientRect(); return [b.width, b.height];", svg)
            assert box[0] > 100 and box[1] > 100
            dots = svg.find_elements(By.CSS_SELECTOR, "circle.pt")
            assert len(dots) == 6
            assert all(d.size["width"] > 0 for d in dots)
        # the CSS is served by the service itself and applied
        assert drv.execute_script("return document.styleSheets.length") == 1
        assert drv.execute_script("return getComputedStyle(document.querySelector('th')).backgroundColor") \
            == "rgb(243, 243, 243)"
        # the details link of the best row leads to its page
        rows[0].find_element(By.CSS_SELECTOR, "a").click()
        assert drv.find_element(By.TAG_NAME, "h1").text == shown[0]
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)
