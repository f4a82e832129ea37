"""Browser tests: Playwright drives Debian's Chromium against uvicorn serving config.asgi in a thread of
this process, on the pytest-django test database (so tests use ``django_db(transaction=True)``). The
Celery worker and the tiny model come from tests/live.py.

A thread rather than tests/live.py's ``live_server_url`` subprocess: the resume test stops and starts
the web server under the page.

* ``asgi_server``: ``.url``; ``.stop()`` and ``.start()`` take the web server down and bring it back
  on the same port (a web-process restart, as the browser sees it).
* ``page``: a fresh browser context per test; a JavaScript error or a Content-Security-Policy violation on
  the page fails the test, and ``page.external_requests`` lists every request that left the live server.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import uvicorn
from django.db import connections
from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
START_TIMEOUT_S = 20


class LiveServer:
    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        config = uvicorn.Config(
            "config.asgi:application", host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn:{self.port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("The live server did not start.")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.server is None or self.thread is None:
            return
        self.server.should_exit = True
        self.thread.join(timeout=15)
        if self.thread.is_alive():
            # A connection that never closes (a test's dead network) holds a graceful exit up: force it. A server
            # left running would share the channel layer with the next test's from another event loop.
            self.server.force_exit = True
            self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "the live server did not stop"
        self.server = self.thread = None


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def asgi_server(transactional_db, monkeypatch) -> Iterator[LiveServer]:
    # Requests run in short-lived threads: without persistent connections each closes its own when done,
    # so none is left open on the test database when it is dropped.
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    server = LiveServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(django_db_setup) -> Iterator[Browser]:
    """Chromium, for one test module: while it runs, Playwright's event loop runs in this thread, which
    the tests of other modules (async_to_sync, ORM calls) must not find there."""
    if not CHROMIUM.exists():
        pytest.skip(f"No Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps its event loop in this thread, which Django takes for async code and so
    # refuses ORM calls from test bodies and fixtures. They are plain sequential code: allow them.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, asgi_server):
    context = browser.new_context(base_url=asgi_server.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    external: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: _note_csp_violation(f"{page.url}: {message.text}", errors))
    page.on("request", lambda request: _note_external(request.url, asgi_server, external))
    page.on("dialog", lambda dialog: errors.append(f"dialog opened: {dialog.message}") or dialog.dismiss())
    page.external_requests = external
    yield page
    context.close()
    assert errors == [], f"the page had JavaScript errors: {errors}"


def _note_csp_violation(text: str, errors: list[str]) -> None:
    # Chromium reports what the policy blocked on the console ("Refused to ... because it violates ...").
    if "Content Security Policy" in text:
        errors.append(f"CSP violation: {text}")


def _note_external(url: str, asgi_server: LiveServer, external: list[str]) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in {"data", "blob", "about"} and (parsed.hostname, parsed.port) != (
        "127.0.0.1",
        asgi_server.port,
    ):
        external.append(url)


def screenshot(page, name: str) -> Path:
    """Save a screenshot under test-artifacts/ (kept by CI as a test artifact)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


@pytest.fixture
def sign_in(page, asgi_server):
    """``sign_in(user)``: give the page's browser a session for ``user``."""
    from django.test import Client

    def sign_in(user) -> None:
        client = Client()
        client.force_login(user)
        cookie = {"name": "sessionid", "value": client.cookies["sessionid"].value, "url": asgi_server.url}
        page.context.add_cookies([cookie])

    return sign_in
