"""The web page in a real browser (Debian's chromium driven by Playwright): translate, heatmap, one step."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from attnmt import Translator

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SENTENCE = "the big cat sits on a red dog"


def _chromium_or_skip() -> str:
    if not Path(CHROMIUM).exists():
        reason = "Debian's chromium is not installed (.ci/run installs it with apt-get install -y chromium)"
        print(f"SKIPPED browser test: {reason}", file=sys.stderr)
        pytest.skip(reason)
    pytest.importorskip("playwright.sync_api")
    return CHROMIUM


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "attnmt", "serve", "--model", str(tiny_model_dir), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
    yield url
    process.terminate()
    process.communicate(timeout=60)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=BROWSER_ARGS)
        yield launched
        launched.close()


def test_translate_heatmap_and_one_step(server: str, browser: object, tiny_model_dir: Path) -> None:
    expected = Translator.load(tiny_model_dir).translations([SENTENCE], beam=5, attention=True)[0]
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page.goto(server)
    page.wait_for_function("document.getElementById('model-info').textContent.includes('Model')")
    page.fill("#source", SENTENCE)
    page.select_option("#beam", "5")
    page.click("#translate")
    page.wait_for_selector("#heatmap td")
    assert page.text_content("#translation") == expected.text
    cells = page.query_selector_all("#heatmap td")
    assert len(cells) == len(expected.source_tokens) * len(expected.target_tokens)
    assert len(page.query_selector_all("#heatmap tbody tr")) == len(expected.target_tokens)
    first = cells[0]
    assert float(first.get_attribute("data-weight")) == pytest.approx(expected.weights[0][0], abs=1e-6)
    first.hover()
    assert "%" in page.text_content("#heat-readout")

    page.click("#tokens .tok >> nth=1")  # the second output word
    page.wait_for_selector("#step-scores td")
    assert expected.target_tokens[1].removeprefix("▁") in page.text_content("#step-title")
    rows = page.query_selector_all("#step-scores tr")
    assert len(rows) == 1 + len(expected.source_tokens)  # header + one row per source token
    shown = [row.query_selector_all("td")[2].text_content() for row in rows[1:]]
    assert shown == [f"{w * 100:.1f}%" for w in expected.weights[1]]
    assert len(page.query_selector_all("#step-topk li")) >= 1
    page.close()


def test_refused_input_shows_a_clear_message(server: str, browser: object) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(server)
    page.click("#translate")
    assert "type a sentence" in page.text_content("#error")
    page.evaluate("document.getElementById('source').removeAttribute('maxlength')")
    page.fill("#source", "a" * 2001)
    page.click("#translate")
    page.wait_for_selector("#error:not(.hidden)")
    message = page.text_content("#error")
    assert message.startswith("text:") and "2000" in message
    page.close()


def test_readable_at_phone_width(server: str, browser: object) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844})  # type: ignore[attr-defined]
    page.goto(server)
    page.fill("#source", SENTENCE)
    page.click("#translate")
    page.wait_for_selector("#heatmap td")
    page.click("#tokens .tok >> nth=0")
    page.wait_for_selector("#step-scores td")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0  # the heatmap scrolls inside its box, the page does not
    for selector in ("#source", "#beam"):
        assert page.evaluate(f"document.querySelector('label[for={selector[1:]}]') !== null")
    page.close()
