"""The web page in a real browser: headless Chromium (Debian's package, driven by Playwright)
against the app as production runs it, plain gunicorn serving the bundled model, on 127.0.0.1."""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from covfefe import config
from tests.helpers import (
    START_SECONDS,
    engine_health,
    free_port,
    require_all,
    require_playwright,
    require_tool,
    stop_process,
)

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
AXE_JS = Path(os.environ.get("COVFEFE_AXE_JS",
                             ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"))
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1100, "height": 900}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


class LiveServer:
    """`gunicorn -c python:serve.gunicorn_conf` (as Dockerfile.serve runs it) with one worker
    and the bundled model on a free 127.0.0.1 port; ``settings`` become COVFEFE_* variables."""

    def __init__(self, **settings):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "COVFEFE_BIND": f"127.0.0.1:{port}", "COVFEFE_WORKERS": "1",
               "COVFEFE_MODEL": str(config.BUNDLED_MODEL),
               **{f"COVFEFE_{name}": value for name, value in settings.items()}}
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:serve.gunicorn_conf",
             "serve:create_app()"], env=env, cwd=ROOT, stdout=self.log,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/api/health", timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    log = self.log.read().decode()
                    self.stop()
                    pytest.fail(f"gunicorn did not start within {START_SECONDS} s:\n{log}")
                time.sleep(0.2)

    def stop(self):
        stop_process(self.process)
        self.log.close()


@pytest.fixture(scope="module")
def server():
    live = LiveServer(RATE_LIMIT="1000 per minute", ENGINE_ROWS="64")
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser():
    chromium = require_tool("chromium")
    with require_playwright().sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def cards(page):
    return page.locator("article.tweet")


class BusyServer:
    """Other users' requests (16 wild candidates each, back to back) in the engine while a
    test runs: each step then carries dozens of rows, and a stream lasts long enough for its
    arrivals to be timed (alone, three rows of the 16-bit network write a whole tweet in a few
    tens of milliseconds, and the browser reads it in one or a few chunks)."""

    def __init__(self, url: str, clients: int = 3):
        self.url, self.done = url, threading.Event()
        body = json.dumps({"n": 16, "temperature": 2, "max_length": 280}).encode()

        def client():
            while not self.done.is_set():
                request = urllib.request.Request(f"{url}/api/generate", data=body,
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=60) as response:
                    response.read()

        self.threads = [threading.Thread(target=client) for _ in range(clients)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        deadline = time.monotonic() + 30
        # (one of them may be between two requests)
        while engine_health(self.url)["rows_in_flight"] < 16 * (len(self.threads) - 1):
            assert time.monotonic() < deadline, "the other requests never reached the engine"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.done.set()
        for thread in self.threads:
            thread.join(60)


def press(page, *keys: str) -> None:
    """Press these keys one after another."""
    for key in keys:
        page.keyboard.press(key)


def generate(page, prefix=None, wait=True):
    if prefix is not None:
        page.fill("#prefix", prefix)
    page.click("#generate")
    if wait:
        page.wait_for_function("document.querySelectorAll('article.tweet').length > 0 && "
                               "!document.querySelector('article.tweet[aria-busy]')")


def test_a_typed_prefix_streams_into_cards_that_start_with_it(page, server):
    page.goto(server.url)
    assert "appear here" in page.locator("#results").inner_text()  # the empty state
    # Record every change of the first card's generated text as it happens, and when any
    # card's text changed (the stream lasts as long as the longest tweet).
    page.evaluate("""() => {
        window.lengths = [];
        window.times = [];
        new MutationObserver((records) => {
            for (const record of records) {
                const parent = record.target.parentElement;
                if (parent?.closest('article[data-index="0"] .generated')) {
                    window.lengths.push(record.oldValue.length);
                }
                if (parent?.closest('article .generated')) {
                    window.times.push(performance.now());
                }
            }
        }).observe(document.getElementById('results'),
                   {subtree: true, characterData: true, characterDataOldValue: true});
    }""")
    page.fill("#prefix", "Make America ")
    assert page.locator("#prefix-count").inner_text() == "13 / 200"
    page.fill("#temperature", "1.5")  # wilder: longer tweets, a longer stream to time
    page.evaluate("window.clicked = performance.now()")
    with BusyServer(server.url):
        generate(page)
    assert cards(page).count() == 3  # the default count
    for index in range(3):
        card = cards(page).nth(index)
        assert card.locator(".text").inner_text().startswith("Make America ")
        assert card.locator(".prefix").inner_text() == "Make America "
        text = card.locator(".text").inner_text()
        assert card.locator(".count").inner_text() == f"{len(text)} / 280"
        assert card.locator(".novelty").inner_text()  # novelty is reported on every card
    lengths = page.evaluate("window.lengths")
    generated = cards(page).first.locator(".generated").inner_text()
    # The text grew one character at a time: every intermediate length was on screen.
    assert lengths == sorted(lengths) and len(set(lengths)) >= min(len(generated), 10)
    # Through gunicorn, as it was generated: the text grew over many separate arrivals, the
    # first well before the last. (A buffered response arrives in one or two reads, and all its
    # characters show within one observer callback, at one time.)
    times = page.evaluate("window.times")
    assert len(set(times)) >= 5 and times[0] < times[-1], times
    assert page.locator("#status").inner_text() == "Wrote 3 tweets."


def test_temperature_and_count_reach_the_model_and_the_permalink_reproduces(page, server):
    page.goto(server.url)
    page.fill("#temperature", "1.3")
    assert page.locator("#temperature-value").inner_text() == "1.3"
    assert "wildest" in page.locator("#temperature-hint").inner_text()
    page.fill("#count", "2")
    generate(page, "Crooked ")
    assert cards(page).count() == 2
    second = cards(page).nth(1)
    text = second.locator(".text").inner_text()
    link = second.locator("a.permalink").get_attribute("href")
    query = parse_qs(urlparse(link).query)
    assert query["temperature"] == ["1.3"] and query["n"] == ["2"] and query["k"] == ["2"]
    assert query["prefix"] == ["Crooked "] and query["model"] == [page.evaluate(
        "fetch('/api/model').then((r) => r.json()).then((card) => card.version)")]
    share = second.locator("a.share").get_attribute("href")
    assert parse_qs(urlparse(share).query)["text"] == [text]

    page.goto(link)  # a fresh page load from the link alone
    page.wait_for_selector("article.tweet.linked.finished")
    assert cards(page).count() == 2
    assert page.locator("article.tweet.linked").get_attribute("data-index") == "1"
    assert page.locator("article.tweet.linked .text").inner_text() == text
    assert page.locator("#prefix").input_value() == "Crooked "
    assert page.locator("#temperature").input_value() == "1.3"


def test_a_link_from_another_model_version_says_so(page, server):
    page.goto(f"{server.url}/?prefix=The%20&temperature=0.8&n=1&seed=5&k=1&model=1999.01.01")
    page.wait_for_selector("article.tweet.finished")
    page.wait_for_selector("#banner:not([hidden])")
    assert "model version 1999.01.01" in page.locator("#banner").inner_text()


def test_the_copy_button_puts_the_tweet_on_the_clipboard(browser, server):
    context = browser.new_context(viewport=DESKTOP,
                                  permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(server.url)
    generate(page, "Fake News ")
    first = cards(page).first
    first.locator("button.copy").click()
    page.wait_for_function("document.querySelector('.copied').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == first.locator(".text").inner_text()
    context.close()


def test_unknown_characters_get_a_quiet_note_and_a_bad_count_its_field_error(page, server):
    page.goto(server.url)
    generate(page, "Great 中 ")  # a character the model never learned: still completed
    assert cards(page).count() == 3
    assert cards(page).first.locator(".text").inner_text().startswith("Great 中 ")
    assert "does not know “中”" in page.locator("#prefix-note").inner_text()
    assert page.locator("#prefix").get_attribute("aria-invalid") is None
    assert page.locator("#prefix-error").inner_text() == "" and page.locator("#banner").is_hidden()

    page.fill("#count", "20")  # the form lets it through; the API names the field
    generate(page, "Great ", wait=False)
    page.wait_for_selector("#count[aria-invalid=true]")
    assert "at most 16, not 20" in page.locator("#count-error").inner_text()
    assert page.evaluate("document.activeElement.id") == "count"
    assert page.locator("#prefix-note").inner_text() == ""  # cleared with the new request
    assert cards(page).count() == 0


def test_rate_limited_and_api_down_are_clear_error_states(page):
    limited = LiveServer(RATE_LIMIT="1 per minute")
    try:
        page.goto(limited.url)
        generate(page, "Sleepy ")
        assert cards(page).count() == 3
        generate(page, wait=False)
        page.wait_for_selector("#banner:not([hidden])")
        assert "Slow down" in page.locator("#banner").inner_text()
        assert "Try again in" in page.locator("#banner").inner_text()
        assert cards(page).count() == 0
        assert page.locator("#generate").is_enabled()
    finally:
        limited.stop()
    generate(page, wait=False)  # the server is gone now
    page.wait_for_function("document.getElementById('banner').textContent.includes("
                           "'cannot be reached')")
    assert page.locator("#banner").get_attribute("role") == "alert"
    assert page.locator("#generate").inner_text() == "Generate"


def test_keyboard_only(page, server):
    page.goto(server.url)
    # The slider starts at the model's measured default temperature (GET /api/model).
    default = json.loads(urllib.request.urlopen(f"{server.url}/api/model").read())[
        "defaults"]["temperature"]
    page.wait_for_function(f"Number(document.getElementById('temperature').value) == {default}")
    order = []
    for _ in range(5):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || "
                                   "document.activeElement.className"))
    assert order == ["skip", "prefix", "temperature", "count", "generate"]
    press(page, "Shift+Tab", "Shift+Tab", "Shift+Tab")
    page.keyboard.type("Our great ")
    press(page, "Tab", "ArrowLeft")  # one step cooler than the default
    assert float(page.locator("#temperature").input_value()) == pytest.approx(default - 0.1)
    press(page, "Tab", "Control+a")
    page.keyboard.type("1")
    press(page, "Shift+Tab", "Shift+Tab", "Enter")  # Enter in the tweet box generates
    page.wait_for_selector("article.tweet.finished")
    assert cards(page).count() == 1
    assert cards(page).first.locator(".text").inner_text().startswith("Our great ")
    link = cards(page).first.locator("a.permalink").get_attribute("href")
    assert parse_qs(urlparse(link).query)["temperature"] == [f"{default - 0.1:g}"]
    # The card's actions are reachable by keyboard too.
    page.locator("button.copy").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "action share"


def test_axe_finds_no_serious_accessibility_violations(page, server):
    if not AXE_JS.is_file():
        message = f"axe-core is not installed at {AXE_JS} (make test installs it with npm)"
        if require_all():
            pytest.fail(message)
        pytest.skip(message)
    page.goto(server.url)
    generate(page, "Make America ")
    page.fill("#count", "20")
    generate(page, wait=False)  # an error state on the page too
    page.wait_for_selector("#count[aria-invalid=true]")
    page.add_script_tag(path=str(AXE_JS))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    serious = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]])
               for v in result["violations"] if v["impact"] in ("serious", "critical")]
    assert serious == []


@pytest.mark.parametrize(("name", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_screenshots_and_no_sideways_scrolling(browser, server, name, viewport):
    context = browser.new_context(viewport=viewport, device_scale_factor=1,
                                  is_mobile=name == "phone", has_touch=name == "phone")
    page = context.new_page()
    page.goto(f"{server.url}/?prefix=The%20Fake%20News%20&temperature=0.8&n=3&seed=36&k=1")
    page.wait_for_selector("article.tweet.linked.finished")
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    box = page.locator("#generate").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("article.tweet.linked").evaluate("(card) => card.classList.remove('linked')")
    page.evaluate("window.scrollTo(0, 0)")
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=name == "desktop")
    assert path.stat().st_size > 10_000
    context.close()
