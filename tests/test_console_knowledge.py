"""The console's Knowledge page (issue 14), in a real Chromium against the real stack and the real knowledge worker:
a PDF uploaded in the page becomes a job whose progress the page follows until it is done, the document is listed
and shown with its chunks, a test question finds its passage with source and scores, removing it works; a file
that cannot be read shows its error; another tenant's pages and JSON are 404; the page works on a phone."""
from __future__ import annotations

import re
import uuid

import pytest

from browser import add_operator, sign_in
from documents import pdf

pytestmark = pytest.mark.usefixtures("knowledge_cleanup")
KB = "/console/t/alpha/knowledge"


def _signed_in(page, web, stack_env, tenant_id: str = "alpha") -> None:
    name, password = add_operator(stack_env, tenant_id)
    sign_in(page, web, tenant_id, name, password)
    page.wait_for_url(re.compile(r"/console/t/.+/conversations$"))


def _upload(page, name: str, data: bytes, mime: str = "application/pdf", tags: str = "") -> int:
    """Upload in the page's form; returns the job id the page was sent back with."""
    page.set_input_files("input[name=file]", files=[{"name": name, "mimeType": mime, "buffer": data}])
    page.fill("input[name=tags]", tags)
    page.click("#upload button[type=submit]")
    page.wait_for_url(re.compile(r"/knowledge\?job=\d+$"))
    return int(page.url.rsplit("=", 1)[1])


def _job_ended(page, job_id: int, timeout: float = 60_000) -> None:
    """The page follows the job by itself (knowledge.js polls jobs.json) and reloads when it ends."""
    page.wait_for_selector(f"tr[data-job='{job_id}'][data-status=done], tr[data-job='{job_id}'][data-status=failed]",
                           timeout=timeout)


def test_a_pdf_uploaded_in_the_page_is_ingested_searchable_and_removable(web, worker, stack_env, page):
    word = f"kite{uuid.uuid4().hex[:6]}"
    title = f"Kite manual {word}"
    data = pdf(["Welcome to the shop.\n\nWe sell bikes and kites.",
                f"Repairs\n\nA {word} repair takes three days and costs forty euros."], title=title)
    _signed_in(page, web, stack_env)
    page.click("header nav >> text=Knowledge")
    page.wait_for_url(re.compile(r"/knowledge$"))
    job_id = _upload(page, f"{word}.pdf", data, tags="manuals, Repairs")
    page.wait_for_selector(f"tr[data-job='{job_id}'] progress")  # progress shown from the start (or done already)
    _job_ended(page, job_id)
    row = page.locator(f"tr[data-job='{job_id}']")
    assert row.get_attribute("data-status") == "done"
    done, total = row.locator(".chunks").text_content().split("/")
    assert int(done) == int(total) >= 1
    job = page.request.get(f"{web}{KB}/jobs.json").json()["jobs"][0]
    assert job["id"] == job_id and job["status"] == "done" and job["chunks_done"] == job["chunks_total"]

    document = page.locator("#documents tr[data-document]", has_text=title)
    assert "pdf" in document.text_content() and "ready" in document.text_content()
    assert "manuals" in document.text_content() and "repairs" in document.text_content()  # tags, cleaned

    page.fill("input[name=q]", f"How long does a {word} repair take?")
    page.click("#test-question button[type=submit]")
    hit = page.locator(".hit", has_text=f"A {word} repair takes three days").first
    citation = hit.locator(".citation").text_content()  # its source: title and pages (a small PDF is one chunk)
    assert citation.startswith(title) and re.search(r"\(p\. (1-)?2\)$", citation)
    assert hit.locator(".badge.in-prompt").count() == 1  # what the bot would put in its prompt
    assert float(hit.locator(".score").text_content()) > 0
    assert float(hit.locator(".similarity").text_content()) > 0
    assert hit.locator(".coverage").text_content().endswith("%")

    document = page.locator("#documents tr[data-document]", has_text=title)
    document.locator("a").click()
    page.wait_for_url(re.compile(r"/knowledge/documents/\d+$"))
    chunk = page.locator(".chunk", has_text=f"A {word} repair")
    assert chunk.locator(".pages").text_content() in ("p. 2", "p. 1-2")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("text=Remove document")
    page.wait_for_url(re.compile(r"/knowledge\?removed="))
    assert "Removed" in page.text_content("[role=status]")
    assert page.locator("#documents tr[data-document]", has_text=title).count() == 0
    page.fill("input[name=q]", f"How long does a {word} repair take?")
    page.click("#test-question button[type=submit]")
    page.wait_for_selector("#results")
    assert page.locator(".hit", has_text=word).count() == 0
    assert page.console_errors == []


def test_removing_asks_first(web, worker, stack_env, page):
    word = f"lamp{uuid.uuid4().hex[:6]}"
    _signed_in(page, web, stack_env)
    page.goto(f"{web}{KB}")
    _job_ended(page, _upload(page, f"{word}.md", f"# Lamps\n\nThe {word} lamp costs 9 euros.\n".encode(),
                             "text/markdown"))
    page.locator("#documents tr[data-document]", has_text=word).locator("a").click()
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("text=Remove document")
    page.goto(f"{web}{KB}")
    assert page.locator("#documents tr[data-document]", has_text=word).count() == 1  # dismissed: still there
    assert page.console_errors == []


def test_a_file_that_cannot_be_read_shows_its_error(web, worker, stack_env, page):
    name = f"broken-{uuid.uuid4().hex[:6]}.pdf"
    _signed_in(page, web, stack_env)
    page.goto(f"{web}{KB}")
    job_id = _upload(page, name, b"%PDF-1.4 this is not really a pdf")
    _job_ended(page, job_id)
    row = page.locator(f"tr[data-job='{job_id}']")
    assert row.get_attribute("data-status") == "failed" and row.locator(".error").text_content().strip()
    document = page.locator("#documents tr[data-document]", has_text=name)
    assert "failed" in document.locator(".doc-status").text_content()
    assert document.locator(".error").text_content().strip()
    # an empty file is refused at once, with the reason, and makes no job
    page.set_input_files("input[name=file]", files=[{"name": "empty.txt", "mimeType": "text/plain", "buffer": b""}])
    page.click("#upload button[type=submit]")
    assert "the file is empty" in page.text_content("#kb-error")
    assert page.console_errors == []


def test_another_tenants_knowledge_is_404(web, stack_env, page):
    _signed_in(page, web, stack_env, "alpha")
    token = page.get_attribute("meta[name=csrf-token]", "content")
    for path in ("knowledge", "knowledge/jobs.json", "knowledge/documents/1", "knowledge?q=repair"):
        assert page.goto(f"{web}/console/t/beta/{path}").status == 404
    for path in ("knowledge/documents/1/remove", "knowledge/upload", "knowledge/reindex"):
        refused = page.request.post(f"{web}/console/t/beta/{path}", form={"csrf_token": token},
                                    headers={"Origin": web}, max_redirects=0)
        assert refused.status == 404
    assert page.request.get(f"{web}{KB}/jobs.json").status == 200
    # alpha's vectors are of its configured model: a reindex is refused with the reason, and no job is made
    mine = page.request.post(f"{web}{KB}/reindex", form={"csrf_token": token}, headers={"Origin": web})
    assert mine.status == 200 and "nothing to reindex" in mine.text()
    assert page.request.get(f"{web}{KB}/documents/999999999").status == 404


def test_the_knowledge_page_fits_a_phone(web, worker, stack_env, page):
    page.set_viewport_size({"width": 390, "height": 844})
    _signed_in(page, web, stack_env)
    page.goto(f"{web}{KB}")
    word = f"phone{uuid.uuid4().hex[:6]}"
    _job_ended(page, _upload(page, f"{word}.md", f"# Phones\n\nThe {word} case costs 12 euros.\n".encode(),
                             "text/markdown"))
    page.fill("input[name=q]", f"What does the {word} case cost?")
    page.click("#test-question button[type=submit]")
    page.wait_for_selector(".hit")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.locator(".hit").first.bounding_box()["width"] <= 390
    assert page.console_errors == []
