"""Screenshots of the operator console for the README, taken from a running `make dev` stack in the system's
Chromium (Playwright, as the browser tests do).

Usage: `make dev` in one terminal, then `.venv/bin/python -m devtools.screenshots [--out docs/console]`.
It adds an operator `screenshots` to the demo tenant (password from --password, default a fixed dev one), has
two customers write to the bot through the real webhook, loads a small price list into the knowledge base, asks
the playground two questions, then saves conversations.png, conversation.png, playground.png, knowledge.png and
usage.png.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from devtools.cli import inbound_payload
from devtools.devstack import ROOT, read_state

PRICE_LIST = """# Price list

## Cleaning

A professional teeth cleaning costs 80 EUR and takes 45 minutes.

## Whitening

Teeth whitening costs 240 EUR per session; a touch-up within a year is half price.

## Opening hours

We are open Monday to Friday from 8:00 to 18:00 and on Saturday from 9:00 to 13:00.
"""
CUSTOMERS = [("+44 7700 900111", "Maria", ["hello", "remember my appointment with the dentist on Friday at 10",
                                           "how much is teeth whitening?"]),
             ("+44 7700 900222", "Tom", ["hi", "are you open on Saturday?"])]


def _operator(tenant: str, name: str, password: str) -> None:
    base = [sys.executable, "-m", "devtools.cli", "operators"]
    added = subprocess.run([*base, "add", "--tenant", tenant, "--name", name, "--password"], input=password + "\n",
                           cwd=ROOT, capture_output=True, text=True)
    if added.returncode != 0:  # it exists already: set the password again
        subprocess.run([*base, "password", "--tenant", tenant, "--name", name], input=password + "\n", cwd=ROOT,
                       check=True, capture_output=True, text=True)


def _customers_write(app_url: str, token: str, number: str) -> None:
    for phone, name, texts in CUSTOMERS:
        for text in texts:
            body = inbound_payload("".join(c for c in phone if c.isdigit()), number, text, name=name)
            requests.post(f"{app_url}/webhooks/infobip", json=body, headers={"X-Webhook-Token": token},
                          timeout=10).raise_for_status()
            time.sleep(2.5)  # one turn each, like people typing


def _shoot(page, app_url: str, tenant: str, out: Path, price_list: Path) -> None:
    base = f"{app_url}/console/t/{tenant}"
    page.goto(f"{base}/knowledge")
    page.set_input_files("input[name=file]", str(price_list))
    page.fill("input[name=tags]", "prices")
    page.click("form.kb-upload button[type=submit]")
    page.wait_for_selector("#documents >> text=Price list", timeout=60_000)
    page.goto(f"{base}/knowledge?q=How+much+is+whitening%3F#test-question")
    page.screenshot(path=str(out / "knowledge.png"), full_page=True)
    page.goto(f"{base}/playground")
    for text in ("hello", "How much does teeth whitening cost?"):
        page.fill("#pg-text", text)
        page.click("#pg-send button[type=submit]")
        page.wait_for_function("n => document.querySelectorAll('#pg-log > li').length >= n",
                               arg=2 * (1 if text == "hello" else 2), timeout=60_000)
    page.screenshot(path=str(out / "playground.png"), full_page=True)
    page.goto(f"{base}/conversations")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(out / "conversations.png"), full_page=True)
    page.click("a.conv-link >> nth=0")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(out / "conversation.png"), full_page=True)
    page.goto(f"{base}/usage")
    page.screenshot(path=str(out / "usage.png"), full_page=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "console"))
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--password", default="dev-console-password")
    args = parser.parse_args(argv)
    state = read_state()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not state.get("app_url") or not chromium:
        print("screenshots: start `make dev` first, and install chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    number = next(t["waba_number"] for t in state["tenants"] if t["tenant_id"] == args.tenant)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _operator(args.tenant, "screenshots", args.password)
    _customers_write(state["app_url"], state["webhook_token"], number)
    price_list = Path(tempfile.mkdtemp()) / "price-list.md"  # one name: a second run replaces the document
    price_list.write_text(PRICE_LIST)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        page.goto(f"{state['app_url']}/console/login")
        page.fill("input[name=tenant]", args.tenant)
        page.fill("input[name=name]", "screenshots")
        page.fill("input[name=password]", args.password)
        page.click("button[type=submit]")
        page.wait_for_url("**/conversations")
        _shoot(page, state["app_url"], args.tenant, out, price_list)
        browser.close()
    print(f"screenshots: saved in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
