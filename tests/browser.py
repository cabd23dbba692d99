"""A real Chromium for the console tests (issue 14), driven by Playwright's Python API. The browser is the
system's (`apt-get install chromium`; `.ci/run` installs it when missing); Playwright's own browser downloads
are never used. Without either, the browser tests skip with a one-line reason (`-ra` prints it)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from devtools.devstack import ROOT

CHROMIUM = os.environ.get("WABOT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# libfaketime's variables (tests/test_moved_clocks.py): Chromium runs on the real clock (its timers misbehave under
# a preloaded fake one), which changes nothing a test sees: pages are computed by the server, on the moved clock.
# Never removed from this process's own environment: libfaketime re-reads FAKETIME, so pytest's clock would jump.
FAKE_CLOCK = ("LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC", "DONT_FAKE_MONOTONIC")


def _real_clock_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in FAKE_CLOCK}


@pytest.fixture(scope="session")
def chromium():
    if not CHROMIUM:
        pytest.skip("browser tests: no Chromium on this machine (apt-get install chromium; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests: the playwright package is missing (make test installs the dev extras)")
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"],
                                         env=_real_clock_env())
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def page(chromium):
    """A fresh browser context (no cookies) and page; console errors (a CSP violation, a script error) are kept
    in `page.console_errors` so a test can assert there are none."""
    context = chromium.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.console_errors = []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    yield page
    context.close()


def add_operator(stack_env: dict, tenant_id: str, password: str = "correct horse battery",
                 name: str | None = None) -> tuple[str, str]:
    """An operator of `tenant_id` with a console password, made by the CLI as an admin would: (name, password)."""
    name = name or f"op-{uuid.uuid4().hex[:8]}"
    done = subprocess.run([sys.executable, "-m", "devtools.cli", "operators", "add", "--tenant", tenant_id,
                           "--name", name, "--password"], input=password + "\n", env=stack_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return name, password


def sign_in(page, web: str, tenant_id: str, name: str, password: str) -> None:
    page.goto(f"{web}/console/login")
    page.fill("input[name=tenant]", tenant_id)
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
