"""The page of `rnngen serve` in a real headless Chromium, driven over the W3C WebDriver protocol.

Debian's chromium and chromium-driver packages (.ci/run installs them). chromedriver is an HTTP
server, so the test speaks WebDriver with httpx: no browser download, nothing fetched from outside.
Without chromium the test is skipped, except in CI (CI=true), where it fails.
Set RNNGEN_UPDATE_SCREENSHOT=1 to write the screenshot to docs/serve.png.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import learnable_text, run_cli, tiny_config
from tests.test_serve import Server

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the key WebDriver wraps element ids in
DOCS = Path(__file__).parent.parent / "docs"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1000"]  # fmt: skip


def browser_paths() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class Browser:
    """One Chromium session through chromedriver's WebDriver endpoints."""

    def __init__(self, chromium: str, driver: str, profile: Path):
        self.driver = subprocess.Popen([driver, "--port=0"], stdout=subprocess.PIPE, text=True)
        for line in self.driver.stdout:
            found = re.search(r"started successfully on port (\d+)", line)
            if found:
                break
        else:
            raise AssertionError("chromedriver did not start")
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{found.group(1)}", timeout=60)
        options = {"binary": chromium, "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]}
        capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
        self.session = self._call("POST", "/session", {"capabilities": capabilities})["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        reply = self.http.request(method, path, json=body)
        value = reply.json()["value"]
        assert reply.status_code == 200, value
        return value

    def command(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def element(self, css: str) -> str:
        return self.command("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def type(self, css: str, text: str) -> None:
        element = self.element(css)
        self.command("POST", f"/element/{element}/clear", {})
        self.command("POST", f"/element/{element}/value", {"text": text})

    def click(self, css: str) -> None:
        self.command("POST", f"/element/{self.element(css)}/click", {})

    def run(self, script: str):
        return self.command("POST", "/execute/sync", {"script": script, "args": []})

    def wait_for(self, script: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.run(script)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for: {script}")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.command("GET", "/screenshot"))

    def quit(self) -> None:
        try:
            self.command("DELETE", "")
        finally:
            self.http.close()
            self.driver.terminate()
            self.driver.wait(timeout=30)


BARS = "Array.from(document.querySelectorAll('#chart .bar.{kind}')).map(b => Number(b.dataset.p))"


def test_page_streams_text_and_draws_the_probabilities(tmp_path):
    chromium, driver = browser_paths()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(learnable_text(), encoding="utf-8")
    config = tiny_config(tmp_path, corpus, model={"hidden_size": 64}, train={"max_steps": 150, "lr": 0.01})
    assert run_cli("train", "--config", config).exit_code == 0
    server = Server("--run", tmp_path / "run")
    browser = Browser(chromium, driver, tmp_path / "profile")
    try:
        browser.command("POST", "/url", {"url": server.url + "/"})
        browser.wait_for("return document.getElementById('model').textContent.startsWith('Model: char-level LSTM')")
        browser.type("#seed", "the cat ")
        browser.type("#length", "120")
        browser.type("#random_seed", "7")
        browser.click("#go")
        browser.wait_for("return document.body.dataset.state === 'done'")
        text = browser.run("return document.getElementById('text').textContent")
        assert text.startswith("the cat ") and len(text) > len("the cat ") + 50
        expected = server.post({"seed": "the cat ", "length": 120, "random_seed": 7, "temperature": 0.8}).json()
        assert text == "the cat " + expected["samples"][0]["text"]  # the page shows what the API writes
        raw, final = browser.run(f"return [{BARS.format(kind='raw')}, {BARS.format(kind='final')}]")
        assert len(raw) == len(final) >= 10
        assert 0 < sum(raw) <= 1 + 1e-4 and 0 < sum(final) <= 1 + 1e-4
        assert browser.run("return document.querySelectorAll('#chart .row.chosen').length") == 1
        browser.click("#text .tok[data-index='3']")  # an earlier step, pinned
        assert browser.run("return document.getElementById('chart_title').textContent").startswith("Step 4:")
        assert browser.run("return document.querySelector('#text .tok.selected').dataset.index") == "3"
        picture = browser.screenshot()
        assert picture.startswith(b"\x89PNG")
        (tmp_path / "serve.png").write_bytes(picture)
        if os.environ.get("RNNGEN_UPDATE_SCREENSHOT"):
            (DOCS / "serve.png").write_bytes(picture)
    finally:
        browser.quit()
        server.stop()
