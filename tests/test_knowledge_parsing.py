"""Documents in, structure-aware chunks out (issue 13, the pure part): every fixture is built here, in the test."""
from __future__ import annotations

import io
import re

import docx
import pypdf
import pytest

from documents import pdf
from shared.conversation.tokens import estimate_text
from shared.knowledge import DocumentError, chunk, parse

MARKDOWN = """# Café Aurora

Welcome to our café in the old town.

## Opening hours

We are open every day except on the holidays below.

### Weekdays

Monday to Friday from 8:00 to 18:00.

### Holidays

Closed on 25 December and 1 January.

## Prices

| Item | Price | Notes |
|------|------:|-------|
| Espresso | 2.50 | single |
| Cappuccino | 3.20 | oat milk +0.40 |
| Croissant | 2.10 | butter |

- Cards accepted
- Cash accepted
  up to 200 euro

```
code block | not a table
```
"""

HTML = """<!doctype html><html><head><title>Aurora FAQ</title><style>body { color: red }</style>
<script>var tracking = "SECRET-SCRIPT";</script></head>
<body><nav><a href="/">Home</a> <a href="/menu">NAVLINK</a></nav>
<h1>Frequently asked</h1>
<p>General   answers
   for guests.</p>
<h2>Parking</h2><p>Free parking behind the building.<br>Entrance from Elm Street.</p>
<h3>Bikes</h3><ul><li>Racks at the door</li><li>Charging for <b>e-bikes</b></li></ul>
<h2>Allergens</h2>
<table><tr><th>Dish</th><th>Contains</th></tr><tr><td>Pancakes</td><td>gluten, egg</td></tr>
<tr><td>Salad</td><td>none</td></tr></table>
<footer><p>Call +31 20 555 0101</p></footer>
</body></html>"""


def _thirty_pages() -> bytes:
    pages = [f"Page {n} of the staff handbook.\n\nRoutine notes about shift {n} and cleaning duties for the "
             f"morning team." for n in range(1, 31)]
    pages[16] = "Page 17 of the staff handbook.\n\nThe spare key to the wine cellar is kept in the blue box."
    return pdf(pages, title="Staff handbook")


def _docx() -> bytes:
    document = docx.Document()
    document.core_properties.title = "Aurora policies"
    document.add_heading("Deliveries", level=1)
    document.add_paragraph("We deliver within 5 km.")
    document.add_heading("Fees", level=2)
    document.add_paragraph("Free above 30 euro.", style="List Bullet")
    document.add_paragraph("Otherwise 3 euro.", style="List Bullet")
    table = document.add_table(rows=3, cols=2)
    for row, cells in zip(table.rows, [("Zone", "Fee"), ("Centre", "0"), ("Suburbs", "3")]):
        for cell, text in zip(row.cells, cells):
            cell.text = text
    document.add_heading("Returns", level=1)
    document.add_paragraph("Unopened goods within 14 days.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _sections(document):
    return {tuple(s.heading_path): [b.text for b in s.blocks] for s in document.sections}


def test_markdown_headings_become_heading_paths_and_the_single_top_heading_the_title():
    document = parse(MARKDOWN.encode(), filename="about.md")
    assert document.kind == "markdown" and document.title == "Café Aurora"
    sections = _sections(document)
    assert list(sections) == [(), ("Opening hours",), ("Opening hours", "Weekdays"), ("Opening hours", "Holidays"),
                              ("Prices",)]
    assert sections[("Opening hours", "Holidays")] == ["Closed on 25 December and 1 January."]
    prices = document.sections[-1].blocks
    assert [b.kind for b in prices] == ["table", "list_item", "list_item", "code"]
    assert prices[0].text.split("\n") == ["| Item | Price | Notes |", "| --- | --- | --- |",
                                          "| Espresso | 2.50 | single |", "| Cappuccino | 3.20 | oat milk +0.40 |",
                                          "| Croissant | 2.10 | butter |"]
    assert prices[2].text == "- Cash accepted up to 200 euro"


def test_html_keeps_headings_paragraphs_lists_and_tables_and_drops_scripts_styles_and_navigation():
    document = parse(HTML.encode(), filename="faq.html", content_type="text/html; charset=utf-8")
    assert document.kind == "html" and document.title == "Aurora FAQ"
    sections = _sections(document)
    assert sections[()] == ["General answers for guests."]
    assert sections[("Parking",)] == ["Free parking behind the building.\nEntrance from Elm Street."]
    assert sections[("Parking", "Bikes")] == ["- Racks at the door", "- Charging for e-bikes"]
    assert sections[("Allergens",)] == ["| Dish | Contains |\n| --- | --- |\n| Pancakes | gluten, egg |\n"
                                        "| Salad | none |", "Call +31 20 555 0101"]
    everything = str(document.sections)
    assert "SECRET-SCRIPT" not in everything and "NAVLINK" not in everything and "color" not in everything
    nested = b"<table><tr><td>a<table><tr><td>x</td></tr></table></td><td>b</td></tr><tr><td>1</td><td>2"
    assert _sections(parse(nested, filename="n.html")) == {(): ["| a x | b |\n| --- | --- |\n| 1 | 2 |"]}


def test_a_fact_on_page_17_of_a_30_page_pdf_is_on_page_17():
    document = parse(_thirty_pages(), filename="handbook.pdf")
    assert document.kind == "pdf" and document.title == "Staff handbook"
    [block] = [b for s in document.sections for b in s.blocks if "wine cellar" in b.text]
    assert block.page == 17
    chunks = chunk(document, max_tokens=60, overlap_tokens=10)
    found = [c for c in chunks if "wine cellar" in c.text]  # one chunk, and the next one's overlap perhaps
    assert found and all(c.page_start <= 17 <= c.page_end for c in found) and found[0].page_end == 17
    assert chunks[0].page_start == 1 and chunks[-1].page_end == 30


def test_pdf_bookmarks_become_heading_paths():
    reader = pypdf.PdfReader(io.BytesIO(pdf(["Intro text.", "Refund rules apply.", "More refund rules."])))
    writer = pypdf.PdfWriter(clone_from=reader)
    writer.add_outline_item(title="Refunds", page_number=1)
    out = io.BytesIO()
    writer.write(out)
    sections = _sections(parse(out.getvalue(), filename="policy.pdf"))
    assert sections == {(): ["Intro text."], ("Refunds",): ["Refund rules apply.", "More refund rules."]}


def test_docx_headings_lists_and_tables():
    document = parse(_docx(), filename="policies.docx")
    assert document.kind == "docx" and document.title == "Aurora policies"
    assert _sections(document) == {
        ("Deliveries",): ["We deliver within 5 km."],
        ("Deliveries", "Fees"): ["- Free above 30 euro.", "- Otherwise 3 euro.",
                                 "| Zone | Fee |\n| --- | --- |\n| Centre | 0 |\n| Suburbs | 3 |"],
        ("Returns",): ["Unopened goods within 14 days."]}


def test_plain_text_is_paragraphs_and_the_file_name_the_title():
    document = parse("First line\nwrapped.\n\n\nSecond paragraph.\r\n".encode(), filename="notes.txt")
    assert document.title == "notes" and _sections(document) == {(): ["First line wrapped.", "Second paragraph."]}


def test_chunks_follow_headings_and_merge_only_tiny_sections_under_one_parent():
    chunks = chunk(parse(MARKDOWN.encode(), filename="about.md"))
    assert [c.heading_path for c in chunks] == [[], ["Opening hours"], ["Opening hours"], ["Prices"]]
    assert chunks[0].text == "Welcome to our café in the old town."  # a tiny section does not merge into a child
    assert chunks[1].text == "We are open every day except on the holidays below."
    # the tiny siblings "Weekdays" and "Holidays" merged under their parent, each with its heading as a line
    assert chunks[2].text == ("Weekdays\nMonday to Friday from 8:00 to 18:00.\n\n"
                              "Holidays\nClosed on 25 December and 1 January.")
    assert [c.ordinal for c in chunks] == [0, 1, 2, 3] and all(c.title == "Café Aurora" for c in chunks)
    assert chunks[2].context_text().startswith("Café Aurora > Opening hours\n\nWeekdays")


def _long_section(paragraphs: int = 12) -> bytes:
    body = "\n\n".join(f"Paragraph {n} explains rule number {n} of the house in some detail, so that guests know "
                       f"what to expect when they visit us on day {n}." for n in range(paragraphs))
    return f"# House rules\n\n## Rules\n\n{body}\n\n## Other\n\nShort.\n".encode()


def test_chunk_sizes_respect_max_tokens_paragraphs_stay_whole_and_chunks_overlap():
    chunks = chunk(parse(_long_section(), filename="rules.md"), max_tokens=80, overlap_tokens=30)
    rules = [c for c in chunks if c.heading_path == ["Rules"]]
    assert len(rules) > 3
    assert all(estimate_text(c.text) <= 80 and c.tokens == estimate_text(c.text) for c in chunks)
    for n, c in enumerate(rules):  # whole paragraphs, after the overlap
        fresh = c.text.split("\n\n")[1 if n else 0:]
        assert fresh and all(p.startswith("Paragraph ") and p.endswith(".") for p in fresh)
    for before, after in zip(rules, rules[1:]):
        overlap = after.text.split("\n\n")[0]  # the tail of the chunk before, within the overlap budget
        assert before.text.endswith(overlap) and 0 < estimate_text(overlap) <= 30
    assert chunks[-1].heading_path == ["Other"] and chunks[-1].text == "Short."  # never across a heading


def test_a_paragraph_longer_than_a_chunk_is_split_by_sentences_with_overlap():
    sentences = [f"Sentence {n} is about the terrace and its heaters." for n in range(40)]
    chunks = chunk(parse(" ".join(sentences).encode(), filename="long.txt"), max_tokens=60, overlap_tokens=15)
    assert len(chunks) > 4 and all(estimate_text(c.text) <= 60 for c in chunks)
    for c in chunks:
        assert re.fullmatch(r"(\s*Sentence \d+ is about the terrace and its heaters\.)+", c.text)
    for before, after in zip(chunks, chunks[1:]):
        first = re.match(r"Sentence \d+", after.text).group()
        assert first in before.text


def test_tables_stay_whole_where_they_fit_else_split_by_rows_with_the_header_repeated():
    rows = "\n".join(f"| Dish {n} | {n}.50 | allergens: gluten, nuts |" for n in range(30))
    text = f"# Menu\n\n## Dishes\n\n| Dish | Price | Notes |\n|---|---|---|\n{rows}\n".encode()
    document = parse(text, filename="menu.md")
    [whole] = chunk(document, max_tokens=1000)
    assert whole.text == document.sections[0].blocks[0].text
    pieces = chunk(document, max_tokens=80, overlap_tokens=10)
    assert len(pieces) > 3 and all(estimate_text(p.text) <= 80 for p in pieces)
    for piece in pieces:
        lines = piece.text.split("\n")
        assert lines[:2] == ["| Dish | Price | Notes |", "| --- | --- | --- |"]
        assert all(re.fullmatch(r"\| Dish \d+ \| \d+\.50 \| allergens: gluten, nuts \|", line) for line in lines[2:])
    assert sum(len(p.text.split("\n")) - 2 for p in pieces) == 30  # every row once, none lost or repeated


def test_same_input_same_hashes_and_a_change_changes_them():
    first, again = parse(MARKDOWN.encode(), filename="a.md"), parse(MARKDOWN.encode(), filename="renamed.md")
    assert first.content_hash == again.content_hash and len(first.content_hash) == 64
    assert [c.content_hash for c in chunk(first)] == [c.content_hash for c in chunk(again)]
    changed = parse(MARKDOWN.replace("25 December", "26 December").encode(), filename="a.md")
    assert changed.content_hash != first.content_hash
    old, new = chunk(first), chunk(changed)
    assert [o.content_hash == n.content_hash for o, n in zip(old, new)] == [True, True, False, True]
    assert parse(_thirty_pages(), filename="x.pdf").content_hash == parse(_thirty_pages(), filename="y.pdf").content_hash


def test_unsupported_types_and_unreadable_files_raise_a_clear_document_error():
    cases = [
        (b"\x00\x01binary\x00junk", "blob.exe", None, "unsupported document type (extension '.exe')"),
        (b"GIF89a", "x", "image/gif", "unsupported document type (content type 'image/gif')"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "photo.txt", None, "binary file, not text"),
        (b"\x00\x00 text with NULs", "weird.md", None, "binary file, not text"),
        (b"PK\x03\x04 truncated zip", "broken.docx", None, "broken.docx: "),
        (b"not a zip at all", "fake.docx", None, "not a DOCX file"),
        (b"hello", "fake.pdf", None, "not a PDF file"),
        (_thirty_pages()[:300], "cut.pdf", None, "cut.pdf: "),
        (b"   \n\n  ", "empty.txt", None, "no text found"),
        (b"<html><script>only()</script></html>", "empty.html", None, "no text found"),
    ]
    for data, filename, content_type, message in cases:
        with pytest.raises(DocumentError) as raised:
            parse(data, filename=filename, content_type=content_type)
        assert message in str(raised.value) and str(raised.value).startswith(filename + ": ")


def test_an_encrypted_pdf_is_refused_as_encrypted():
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf(["Secret recipe."]))))
    writer.encrypt(user_password="letmein", owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(DocumentError, match=r"^secret\.pdf: the PDF is encrypted \(password protected\)"):
        parse(out.getvalue(), filename="secret.pdf")


def test_chunk_refuses_an_overlap_that_leaves_no_room():
    document = parse(b"Some text.", filename="a.txt")
    with pytest.raises(ValueError):
        chunk(document, max_tokens=100, overlap_tokens=80)
