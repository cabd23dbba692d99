"""Documents in, structure out (issue 13): text, Markdown, HTML, PDF and DOCX parsed into sections.

A `Document` is a list of `Section`s, each with its heading path (["Opening hours", "Holidays"]) and its blocks:
paragraphs, list items, code and tables (rendered as Markdown rows, header first). A PDF block knows its page.
`content_hash` is the sha256 of the normalised text, so re-ingesting an unchanged file is detectable whatever its
name or container bytes (a re-saved PDF with the same text hashes the same).

Pure functions: no database, no network. Anything that cannot be read raises `DocumentError`, naming the file and
the reason, in words an operator can act on.
"""
from __future__ import annotations

import hashlib
import io
import re
import unicodedata
import zipfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePath
from typing import Callable, Iterable

import docx
import pypdf
from docx.oxml.ns import qn
from docx.table import Table as DocxTable
from docx.text.paragraph import Paragraph as DocxParagraph
from pypdf.errors import PyPdfError


class DocumentError(Exception):
    """A document that cannot be ingested: the message names the file and the reason."""

    def __init__(self, filename: str, reason: str):
        super().__init__(f"{filename}: {reason}")
        self.filename = filename
        self.reason = reason


@dataclass(frozen=True)
class Block:
    text: str
    kind: str = "paragraph"  # "paragraph" | "list_item" | "table" | "code"
    page: int | None = None  # 1-based, PDFs only


@dataclass(frozen=True)
class Section:
    heading_path: list[str]
    blocks: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class Document:
    title: str
    sections: list[Section]
    kind: str  # "text" | "markdown" | "html" | "pdf" | "docx"
    content_hash: str
    filename: str = ""


KINDS_BY_EXTENSION = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
                      ".html": "html", ".htm": "html", ".xhtml": "html", ".pdf": "pdf", ".docx": "docx"}
KINDS_BY_CONTENT_TYPE = {
    "text/plain": "text", "text/markdown": "markdown", "text/x-markdown": "markdown", "text/html": "html",
    "application/xhtml+xml": "html", "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx"}
_WHITESPACE = re.compile(r"[ \t\f\v\r\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def parse(data: bytes, *, filename: str, content_type: str | None = None) -> Document:
    """The structure of a document, by its content type (or else its file name's extension)."""
    kind = detect_kind(filename, content_type)
    sections, title = _PARSERS[kind](data, filename)
    sections = [s for s in sections if s.blocks]
    if not sections:
        hint = " (a scanned PDF needs OCR first)" if kind == "pdf" else ""
        raise DocumentError(filename, f"no text found in this {kind} document{hint}")
    return Document(title=title or PurePath(filename).stem, sections=sections, kind=kind,
                    content_hash=content_hash(sections), filename=filename)


def detect_kind(filename: str, content_type: str | None = None) -> str:
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime in KINDS_BY_CONTENT_TYPE:
        return KINDS_BY_CONTENT_TYPE[mime]
    extension = PurePath(filename).suffix.lower()
    if extension in KINDS_BY_EXTENSION:
        return KINDS_BY_EXTENSION[extension]
    what = f"content type {mime!r}" if mime and mime != "application/octet-stream" else \
        f"extension {extension!r}" if extension else "no extension"
    raise DocumentError(filename, f"unsupported document type ({what}); supported: text, Markdown, HTML, PDF, DOCX")


def normalised_text(sections: Iterable[Section]) -> str:
    """The text a document's hash is taken over: headings and blocks, in order, one per paragraph."""
    parts = []
    for section in sections:
        if section.heading_path:
            parts.append("#" * len(section.heading_path) + " " + " / ".join(section.heading_path))
        parts.extend(b.text for b in section.blocks)
    return "\n\n".join(parts)


def content_hash(sections: Iterable[Section]) -> str:
    return hashlib.sha256(normalised_text(sections).encode("utf-8")).hexdigest()


def clean(text: str, *, keep_lines: bool = True) -> str:
    """NFC, runs of blanks made one space, control characters dropped; lines kept (or joined by spaces)."""
    text = _CONTROL.sub("", unicodedata.normalize("NFC", text))
    lines = [_WHITESPACE.sub(" ", line).strip() for line in text.split("\n")]
    return ("\n" if keep_lines else " ").join(line for line in lines if line)


def table_text(rows: list[list[str]]) -> str:
    """Rows as Markdown: the first row is the header, followed by its separator row."""
    rows = [[clean(c, keep_lines=False).replace("|", "\\|") for c in r] for r in rows if any(c.strip() for c in r)]
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "|" + " --- |" * width)
    return "\n".join(lines)


class _Outline:
    """Headings and blocks as they come, into sections with heading paths."""

    def __init__(self):
        self.stack: list[tuple[int, str]] = []
        self.sections: list[Section] = [Section([])]
        self.headings: list[tuple[int, str]] = []

    def heading(self, level: int, text: str) -> None:
        text = clean(text, keep_lines=False)
        if not text:
            return
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, text))
        self.headings.append((level, text))
        self.sections.append(Section([t for _, t in self.stack]))

    def block(self, text: str, kind: str = "paragraph", page: int | None = None) -> None:
        text = text if kind in ("table", "code") else clean(text)
        if text.strip():
            self.sections[-1].blocks.append(Block(text, kind, page))

    def result(self, title: str = "") -> tuple[list[Section], str]:
        """A single top-level heading that opens the document is its title, not part of every heading path."""
        top = min((level for level, _ in self.headings), default=0)
        tops = [t for level, t in self.headings if level == top]
        if len(tops) == 1 and self.headings[0] == (top, tops[0]):
            sections = [Section(s.heading_path[1:], s.blocks) if s.heading_path[:1] == tops[:1] else s
                        for s in self.sections]
            return sections, title or tops[0]
        return self.sections, title


def _decode(data: bytes, filename: str) -> str:
    """Bytes that should be text: UTF-8 (or UTF-16 with its BOM, or Windows-1252); a binary is refused."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise DocumentError(filename, f"not valid UTF-16 text ({e.reason})") from None
    if b"\x00" in data[:8192] or data.startswith((b"%PDF", b"PK\x03\x04", b"\x89PNG", b"\xff\xd8\xff")):
        raise DocumentError(filename, "this is a binary file, not text")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise DocumentError(filename, "not text in UTF-8 or Windows-1252 (a binary file?)")
    if len(_CONTROL.findall(text[:8192])) > max(2, len(text[:8192]) // 100):
        raise DocumentError(filename, "this is a binary file, not text (control characters)")
    return text


def _parse_text(data: bytes, filename: str) -> tuple[list[Section], str]:
    outline = _Outline()
    for paragraph in re.split(r"\n\s*\n", _decode(data, filename).replace("\r\n", "\n")):
        outline.block(clean(paragraph, keep_lines=False))
    return outline.result()


_MD_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_MD_LIST = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+")
_MD_FENCE = re.compile(r"^\s*(```|~~~)")
_MD_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_MD_SETEXT = re.compile(r"^\s*(=+|-+)\s*$")
_MD_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")


def _md_cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


def _md_table(lines: list[str], i: int) -> tuple[str, int] | None:
    """A pipe table starting at line i (header, separator, rows): its text and the line after it."""
    if "|" not in lines[i] or i + 1 >= len(lines) or not _MD_TABLE_SEPARATOR.match(lines[i + 1]):
        return None
    rows, j = [_md_cells(lines[i])], i + 2
    while j < len(lines) and "|" in lines[j] and lines[j].strip():
        rows.append(_md_cells(lines[j]))
        j += 1
    return table_text(rows), j


def _parse_markdown(data: bytes, filename: str) -> tuple[list[Section], str]:
    lines = _decode(data, filename).replace("\r\n", "\n").split("\n")
    outline, paragraph, kind = _Outline(), [], "paragraph"

    def flush():
        nonlocal kind
        outline.block(" ".join(paragraph), kind)
        paragraph.clear()
        kind = "paragraph"

    i = 0
    while i < len(lines):
        line, heading, table = lines[i], _MD_HEADING.match(lines[i]), _md_table(lines, i)
        if _MD_FENCE.match(line):
            flush()
            end = next((j for j in range(i + 1, len(lines)) if _MD_FENCE.match(lines[j])), len(lines))
            outline.block("\n".join(lines[i:end + 1]).strip(), "code")
            i = end + 1
            continue
        if heading or table:
            flush()
            if heading:
                outline.heading(len(heading.group(1)), heading.group(2))
                i += 1
            else:
                outline.block(table[0], "table")
                i = table[1]
            continue
        if paragraph and kind == "paragraph" and len(paragraph) == 1 and _MD_SETEXT.match(line):
            outline.heading(1 if line.strip()[0] == "=" else 2, paragraph.pop())
        elif not line.strip() or _MD_LIST.match(line):
            flush()
            kind = "list_item" if line.strip() else "paragraph"
            paragraph.extend([line.strip()] if line.strip() else [])
        elif _MD_RULE.match(line) and not paragraph:
            pass  # a thematic break
        else:
            paragraph.append(line.strip())
        i += 1
    flush()
    return outline.result()


class _HtmlReader(HTMLParser):
    """Headings, paragraphs, list items and tables of an HTML page; scripts, styles and navigation dropped."""

    SKIP = {"script", "style", "nav", "noscript", "template", "svg", "iframe", "object", "button", "select", "form"}
    BLOCKS = {"p", "div", "section", "article", "main", "header", "footer", "aside", "blockquote", "pre", "dd",
              "dt", "figure", "figcaption", "address", "ul", "ol", "dl", "body", "hr", "details", "summary"}
    VOID = {"br", "hr", "img", "input", "meta", "link", "wbr", "area", "base", "col", "embed", "source", "track"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.outline, self.text, self.skipping, self.title = _Outline(), [], [], ""
        self.in_title, self.heading_level, self.in_item = False, 0, 0
        self.table: list[list[str]] | None = None
        self.nested = 0  # tables inside a table cell: their text flows into the cell

    def handle_starttag(self, tag, attrs):
        if self.skipping or tag in self.SKIP:
            if tag not in self.VOID:
                self.skipping.append(tag)
            return
        if tag == "title":
            self.in_title = True
        elif tag == "br":
            self.text.append("\n")
        elif re.fullmatch(r"h[1-6]", tag) and self.table is None:
            self._flush()
            self.heading_level = int(tag[1])
        elif self.nested or (tag == "table" and self.table is not None):
            self.nested += tag == "table"
            self.text.append(" ")
        elif tag == "table":
            self._flush()
            self.table = []
        elif tag == "tr" and self.table is not None:
            self.table.append([])
        elif tag in ("td", "th") and self.table is not None:
            if not self.table:
                self.table.append([])
            self.text = []
        elif (tag == "li" or tag in self.BLOCKS) and self.table is None:
            self._flush()
            self.in_item += tag == "li"

    def handle_endtag(self, tag):
        if self.skipping:
            if self.skipping[-1] == tag:
                self.skipping.pop()
            return
        if tag == "title":
            self.in_title = False
        elif re.fullmatch(r"h[1-6]", tag) and self.heading_level:
            self.outline.heading(self.heading_level, "".join(self.text))
            self.text, self.heading_level = [], 0
        elif self.nested:
            self.nested -= tag == "table"
            self.text.append(" ")
        elif tag in ("td", "th") and self.table:
            self.table[-1].append(clean("".join(self.text), keep_lines=False))
            self.text = []
        elif tag == "table" and self.table is not None:
            self.outline.block(table_text(self.table), "table")
            self.table = None
        elif (tag == "li" or tag in self.BLOCKS) and self.table is None:
            self._flush()
            self.in_item = max(0, self.in_item - (tag == "li"))

    def handle_data(self, data):
        if self.skipping:
            return
        if self.in_title:
            self.title += data
        else:
            self.text.append(re.sub(r"\s+", " ", data))

    def _flush(self):
        if self.table is None and not self.heading_level:
            text = clean("".join(self.text))
            if self.in_item and text:
                self.outline.block("- " + text, "list_item")
            else:
                self.outline.block(text)
            self.text = []


def _parse_html(data: bytes, filename: str) -> tuple[list[Section], str]:
    reader = _HtmlReader()
    reader.feed(_decode(data, filename))
    reader.close()
    if reader.table:  # a table never closed, its last cell neither
        if "".join(reader.text).strip():
            reader.table[-1].append(clean("".join(reader.text), keep_lines=False))
            reader.text = []
        reader.outline.block(table_text(reader.table), "table")
        reader.table = None
    reader._flush()
    return reader.outline.result(clean(reader.title, keep_lines=False))


def _pdf_outline(reader: pypdf.PdfReader) -> dict[int, list[str]]:
    """Page index -> heading path of the PDF's bookmarks that start on it (the deepest last one wins)."""
    paths: dict[int, list[str]] = {}

    def walk(items, path):
        last: list[str] = path
        for item in items:
            if isinstance(item, list):
                walk(item, last)
                continue
            last = path + [clean(str(item.title), keep_lines=False)]
            try:
                paths[reader.get_destination_page_number(item)] = last
            except (PyPdfError, KeyError, ValueError, TypeError, AttributeError):
                continue

    try:
        walk(reader.outline, [])
    except (PyPdfError, KeyError, ValueError, TypeError, AttributeError):
        return {}
    return paths


def _decrypt(reader: pypdf.PdfReader, filename: str) -> None:
    """A PDF encrypted with an empty user password (restrictions only) can be read; one needing a password not."""
    try:
        opened = reader.decrypt("")
    except (PyPdfError, NotImplementedError, ValueError) as e:
        raise DocumentError(filename, f"the PDF is encrypted and cannot be decrypted here ({e})") from None
    if not opened:
        raise DocumentError(filename, "the PDF is encrypted (password protected); upload an unprotected copy")


def _open_pdf(data: bytes, filename: str) -> pypdf.PdfReader:
    if not data.lstrip()[:5] == b"%PDF-":
        raise DocumentError(filename, "not a PDF file (no %PDF- header)")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            _decrypt(reader, filename)
        len(reader.pages)
    except DocumentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError, NotImplementedError) as e:
        raise DocumentError(filename, f"the PDF cannot be read ({type(e).__name__}: {e})") from None
    return reader


def _parse_pdf(data: bytes, filename: str) -> tuple[list[Section], str]:
    reader = _open_pdf(data, filename)
    outline, bookmarks = _Outline(), _pdf_outline(reader)
    for index, page in enumerate(reader.pages):
        if index in bookmarks:
            outline.sections.append(Section(bookmarks[index]))
        try:
            text = page.extract_text() or ""
        except (PyPdfError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise DocumentError(filename, f"page {index + 1} cannot be read ({type(e).__name__}: {e})") from None
        text = re.sub(r"(\w)-\n(\w)", r"\1\2", text.replace("\r\n", "\n"))  # words hyphenated at a line end
        for paragraph in re.split(r"\n\s*\n", text):
            outline.block(clean(paragraph, keep_lines=False), page=index + 1)
    try:
        title = clean(str((reader.metadata or {}).get("/Title") or ""), keep_lines=False)
    except (PyPdfError, ValueError, KeyError, TypeError):
        title = ""
    return outline.sections, title


def _docx_heading_level(style_name: str) -> int:
    if style_name == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", style_name)
    return int(match.group(1)) + 1 if match else 0  # under a "Title", Heading 1 is one level down


def _docx_paragraph(outline: _Outline, paragraph) -> None:
    style = paragraph.style.name if paragraph.style is not None else ""
    level = _docx_heading_level(style)
    if level:
        outline.heading(level, paragraph.text)
        return
    numbered = paragraph._p.pPr is not None and paragraph._p.pPr.numPr is not None
    is_item = numbered or style.startswith("List")
    outline.block(("- " if is_item else "") + paragraph.text, "list_item" if is_item else "paragraph")


def _parse_docx(data: bytes, filename: str) -> tuple[list[Section], str]:
    try:
        document = docx.Document(io.BytesIO(data))
        outline = _Outline()
        for element in document.element.body.iterchildren():
            if element.tag == qn("w:p"):
                _docx_paragraph(outline, DocxParagraph(element, document))
            elif element.tag == qn("w:tbl"):
                table = DocxTable(element, document)
                outline.block(table_text([[c.text for c in row.cells] for row in table.rows]), "table")
        title = clean(document.core_properties.title or "", keep_lines=False)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, OSError) as e:
        reason = "not a DOCX file (not a ZIP archive)" if isinstance(e, zipfile.BadZipFile) else \
            f"the DOCX is damaged ({type(e).__name__}: {e})"
        raise DocumentError(filename, reason) from None
    except Exception as e:  # python-docx and lxml raise their own types for a broken package
        raise DocumentError(filename, f"the DOCX cannot be read ({type(e).__name__}: {e})") from None
    return outline.result(title)


_PARSERS: dict[str, Callable[[bytes, str], tuple[list[Section], str]]] = {
    "text": _parse_text, "markdown": _parse_markdown, "html": _parse_html, "pdf": _parse_pdf, "docx": _parse_docx}
