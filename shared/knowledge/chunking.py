"""Structure-aware chunks of a parsed `Document` (issue 13), sized for retrieval by the token estimate.

- A chunk never crosses a heading boundary, except that a tiny section (at most a quarter of `max_tokens`) merges
  with the next one when that is its sibling (same parent heading) and the two fit in one chunk, and so on while
  the run stays tiny; the merged chunk's heading path is the parent's, each section's heading a line in its text.
- A PDF page break ends a chunk that holds more than an eighth of `max_tokens`, and the next opens without
  overlap, so passages are cited by their page.
- Blocks (paragraphs, list items, code, tables) are kept whole where they fit. A longer paragraph is split at
  sentence ends (then words, then characters); a longer table by rows, its header row repeated in every piece.
- Consecutive chunks of one section overlap by up to `overlap_tokens`: whole trailing blocks of the previous
  chunk where they fit, else its last sentences (or words). Table rows are not repeated as overlap: a table
  piece's context is its header, repeated anyway.
- `count(chunk.text) <= max_tokens` for every chunk, by the counter given (`estimate_text` by default).
- Each chunk carries the document title, its heading path, its page range (PDFs), its ordinal in the document
  and a hash of its heading path and text, so an unchanged chunk of a re-ingested document need not be
  re-embedded.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from shared.conversation.tokens import TokenCounter, estimate_text
from shared.knowledge.documents import Block, Document, Section

_SENTENCE_END = re.compile(r"(?<=[.!?;:。！？])\s+|(?<=[。！？])")
_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Chunk:
    ordinal: int  # 0-based, in document order
    title: str
    heading_path: list[str]
    text: str
    tokens: int  # by the counter the chunks were made with
    page_start: int | None = None
    page_end: int | None = None
    content_hash: str = ""

    def context_text(self) -> str:
        """The text with its title and heading path in front: what to embed, so a chunk knows where it stands."""
        where = " > ".join(p for p in [self.title, *self.heading_path] if p)
        return f"{where}\n\n{self.text}" if where else self.text


@dataclass(frozen=True)
class _Unit:
    text: str
    page: int | None
    kind: str


def chunk(document: Document, *, max_tokens: int = 350, overlap_tokens: int = 50,
          count: TokenCounter = estimate_text) -> list[Chunk]:
    """The document's chunks, in order: see the module docstring for the rules."""
    if max_tokens < 16 or not 0 <= overlap_tokens <= max_tokens // 2:
        raise ValueError("chunk: need max_tokens >= 16 and 0 <= overlap_tokens <= max_tokens / 2")
    chunks: list[Chunk] = []
    for path, units in _groups(document.sections, max_tokens, overlap_tokens, count):
        for texts, pages in _pack(units, max_tokens, overlap_tokens, count):
            text = _SEPARATOR.join(texts)
            known = [p for p in pages if p is not None]
            digest = hashlib.sha256("\n".join([*path, "", text]).encode("utf-8")).hexdigest()
            chunks.append(Chunk(ordinal=len(chunks), title=document.title, heading_path=list(path), text=text,
                                tokens=count(text), page_start=min(known, default=None),
                                page_end=max(known, default=None), content_hash=digest))
    return chunks


def _section_tokens(section: Section, count: TokenCounter) -> int:
    return count(_SEPARATOR.join(b.text for b in section.blocks))


def _joins(first: Section, following: Section) -> bool:
    """`following` may merge into a group opened by `first`: a sibling, under the same parent heading."""
    return bool(first.heading_path) and len(following.heading_path) == len(first.heading_path) \
        and following.heading_path[:-1] == first.heading_path[:-1]


def _groups(sections: list[Section], max_tokens: int, overlap_tokens: int, count: TokenCounter):
    """(heading path, units) per run of sections chunked together: one section, or tiny ones merged."""
    tiny, i = max_tokens // 4, 0
    while i < len(sections):
        group, total = [sections[i]], _section_tokens(sections[i], count)
        while i + len(group) < len(sections) and total <= tiny:
            following = sections[i + len(group)]
            # the heading line a merged section brings along is counted too
            extra = _section_tokens(following, count) + count(" / ".join(following.heading_path)) + 2
            if not _joins(group[0], following) or total + extra > max_tokens:
                break
            group.append(following)
            total += extra
        i += len(group)
        yield _group_path(group), _group_units(group, max_tokens, overlap_tokens, count)


def _group_path(group: list[Section]) -> list[str]:
    path = list(group[0].heading_path)
    for section in group[1:]:
        while path and section.heading_path[:len(path)] != path:
            path.pop()
    return path


def _group_units(group: list[Section], max_tokens: int, overlap_tokens: int, count: TokenCounter) -> list[_Unit]:
    shared = len(_group_path(group))
    units: list[_Unit] = []
    for section in group:
        heading = " / ".join(section.heading_path[shared:])
        for n, block in enumerate(section.blocks):
            text = f"{heading}\n{block.text}" if n == 0 and heading and len(group) > 1 else block.text
            units.extend(_split_block(Block(text, block.kind, block.page), max_tokens, overlap_tokens, count))
    return units


def _split_block(block: Block, max_tokens: int, overlap_tokens: int, count: TokenCounter) -> list[_Unit]:
    """A block whole if it fits in a chunk, else in pieces by rows (tables) or sentences, each leaving room for
    the overlap that precedes it."""
    if count(block.text) <= max_tokens:
        return [_Unit(block.text, block.page, block.kind)]
    limit = max_tokens - overlap_tokens - 1  # the separator after the overlap
    if block.kind == "table":
        return [_Unit(t, block.page, "table") for t in _split_table(block.text, limit, count)]
    return [_Unit(t, block.page, block.kind) for t in _split_text(block.text, limit, count)]


def _split_table(text: str, limit: int, count: TokenCounter) -> list[str]:
    lines = text.split("\n")
    header_size = 2 if len(lines) > 1 and set(lines[1].replace("|", "").split()) <= {"---"} else 1
    header, rows = "\n".join(lines[:header_size]), lines[header_size:]
    room = limit - count(header + "\n")
    if room < limit // 4:  # a header that leaves no room for rows: the table is split as text
        return _split_text(text, limit, count)
    pieces: list[str] = []
    for row in rows:
        pieces.extend(_split_text(row, room, count) if count(row) > room else [row])
    return [header + "\n" + body for body in _greedy(pieces, "\n", room, count)]


def _split_text(text: str, limit: int, count: TokenCounter) -> list[str]:
    """Sentences packed up to `limit`; a sentence too long goes by words, a word too long by characters."""
    pieces: list[str] = []
    for sentence in (s for s in _SENTENCE_END.split(text) if s.strip()):
        if count(sentence) <= limit:
            pieces.append(sentence)
            continue
        for word in sentence.split():
            pieces.extend(_by_characters(word, limit, count) if count(word) > limit else [word])
    return _greedy(pieces, " ", limit, count)


def _by_characters(word: str, limit: int, count: TokenCounter) -> list[str]:
    out, start = [], 0
    while start < len(word):
        end = start + 1
        while end < len(word) and count(word[start:end + 1]) <= limit:
            end += 1
        out.append(word[start:end])
        start = end
    return out


def _greedy(pieces: list[str], sep: str, limit: int, count: TokenCounter) -> list[str]:
    out: list[str] = []
    for piece in pieces:
        if out and count(out[-1] + sep + piece) <= limit:
            out[-1] += sep + piece
        else:
            out.append(piece)
    return out


def _overlap(units: list[_Unit], budget: int, count: TokenCounter) -> list[_Unit]:
    """The tail of a chunk repeated at the start of the next: whole blocks if they fit, else sentences or words."""
    if budget <= 0 or not units or units[-1].kind == "table":
        return []
    taken: list[_Unit] = []
    for unit in reversed(units):
        if unit.kind == "table" or count(_SEPARATOR.join(u.text for u in [unit, *taken])) > budget:
            break
        taken.insert(0, unit)
    if taken:
        return taken
    last = units[-1]
    parts = [s for s in _SENTENCE_END.split(last.text) if s.strip()]
    parts = parts if count(parts[-1]) <= budget else last.text.split()
    tail: list[str] = []
    while parts and count(" ".join([parts[-1], *tail])) <= budget:
        tail.insert(0, parts.pop())
    return [_Unit(" ".join(tail), last.page, last.kind)] if tail else []


def _new_page(current: list[_Unit], unit: _Unit, max_tokens: int, count: TokenCounter) -> bool:
    """Whether `unit` opens a page after a chunk that already holds a fair part of one (over an eighth of
    `max_tokens`): then it starts a chunk of its own (a nearly empty page still joins its neighbour)."""
    return unit.page is not None and current[-1].page is not None and unit.page != current[-1].page \
        and count(_SEPARATOR.join(u.text for u in current)) > max_tokens // 8


def _pack(units: list[_Unit], max_tokens: int, overlap_tokens: int, count: TokenCounter):
    """(texts, pages) per chunk: units in order up to `max_tokens`, each chunk opening with the previous one's tail,
    except after a page break (`_new_page`): a page is cited by its number, so no text of the page before leads
    it."""
    current: list[_Unit] = []
    fresh = False  # the current chunk holds a unit of its own, not only the overlap
    for unit in units:
        page_break = fresh and _new_page(current, unit, max_tokens, count)
        if fresh and (page_break or count(_SEPARATOR.join(u.text for u in [*current, unit])) > max_tokens):
            yield [u.text for u in current], [u.page for u in current]
            current = [] if page_break else _overlap(current, overlap_tokens, count)
            if count(_SEPARATOR.join(u.text for u in [*current, unit])) > max_tokens:
                current = []
        current.append(unit)
        fresh = True
    if fresh:
        yield [u.text for u in current], [u.page for u in current]