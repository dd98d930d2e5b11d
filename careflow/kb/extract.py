"""Text extraction for knowledge-base sources: PDF, DOCX, HTML, Markdown and plain text.

Every format is reduced to the same shape: the parsed header (`Key: value` lines at the top, or a
Markdown `---` front-matter block) and the body as paragraphs, each heading its own paragraph.  The
chunker only sees that shape, so section and recommendation rules are the same for every format.

Errors name the file and never quote its content (a mis-filed document could hold PHI).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

SUPPORTED_SUFFIXES = (".pdf", ".docx", ".html", ".htm", ".md", ".markdown", ".txt")
DOC_TYPES = ("guideline", "protocol", "formulary", "payer_policy")

# header key (as written) -> field name
HEADER_KEYS = {
    "document-id": "document_id",
    "title": "title",
    "organization": "organization",
    "effective-date": "effective_date",
    "doc-type": "doc_type",
    "version": "version",
}
_HEADER_LINE = re.compile(r"^([A-Za-z][A-Za-z]*(?:-[A-Za-z]+)*):\s*(.*)$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_BULLET = re.compile(r"^(?:[-*\u2022]\s+|\(?[a-z0-9]{1,2}[.)]\s+)")
_MD_HEADING = re.compile(r"^#{1,6}\s+")
_MD_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1")
_MD_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}")


class ExtractionError(Exception):
    """A source that cannot be ingested; the message names the file and why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class DocumentHeader:
    document_id: str
    title: str
    organization: str
    effective_date: str  # ISO date
    doc_type: str
    version: str
    extra: dict[str, str] = field(default_factory=dict)  # other header keys, kept as written


@dataclass(frozen=True)
class ExtractedDocument:
    source: str  # file name, relative to the ingested folder
    format: str  # pdf | docx | html | md | txt
    header: DocumentHeader
    paragraphs: list[str]  # body blocks in reading order; headings are paragraphs of their own
    content_hash: str  # sha256 of the source bytes: the idempotency key of ingestion

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)


def file_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract(path: Path, name: str | None = None) -> ExtractedDocument:
    """Read one source file; ExtractionError for a missing, unreadable, unsupported or header-less one."""
    name = name or path.name
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ExtractionError(name, f"unsupported format {suffix or '(none)'!r}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ExtractionError(name, "file not found") from None
    except OSError as exc:
        raise ExtractionError(name, f"cannot read file ({exc.strerror})") from None
    return extract_bytes(data, name)


def extract_bytes(data: bytes, name: str) -> ExtractedDocument:
    suffix = Path(name).suffix.lower()
    fmt = {".htm": "html", ".markdown": "md"}.get(suffix, suffix.lstrip("."))
    try:
        lines = _LINE_READERS[fmt](data)
    except KeyError:
        raise ExtractionError(name, f"unsupported format {suffix or '(none)'!r}") from None
    except ExtractionError:
        raise
    except Exception as exc:  # each library has its own errors for a corrupt file
        raise ExtractionError(name, f"unreadable {fmt} file ({type(exc).__name__})") from None
    header, body = split_header(lines, name)
    paragraphs = to_paragraphs(body, markdown=fmt == "md")
    if not paragraphs:
        raise ExtractionError(name, "no body text after the header")
    return ExtractedDocument(name, fmt, header, paragraphs, file_hash(data))


# -- header ---------------------------------------------------------------------------------------
def split_header(lines: list[str], name: str) -> tuple[DocumentHeader, list[str]]:
    """Parse the leading `Key: value` block (md front matter included); return it and the rest."""
    values: dict[str, str] = {}
    extra: dict[str, str] = {}
    i, n = 0, len(lines)
    skipped = 0
    # Up to a few lines (an HTML <h1>, a front-matter fence) may come before the first header line.
    while i < n and not _is_header_start(lines[i]):
        if lines[i].strip():
            skipped += 1
            if skipped > 3:
                break
        i += 1
    contiguous = False  # still in the block of the previous header line (no blank line since)
    while i < n:
        line = lines[i].strip()
        if line in ("", "---"):
            if values and line == "---":  # the closing front-matter fence ends the header
                i += 1
                break
            contiguous = False
            i += 1
            continue
        match = _HEADER_LINE.match(line)
        if not match:
            break
        key, value = match.group(1).lower(), match.group(2).strip()
        if key in HEADER_KEYS:
            values[HEADER_KEYS[key]] = value
        elif contiguous or "-" in key or not _header_complete(values):
            extra[match.group(1)] = value
        else:  # e.g. "Scope: ..." opening the body after a blank line
            break
        contiguous = True
        i += 1
    missing = [k for k, f in HEADER_KEYS.items() if not values.get(f)]
    if missing:
        raise ExtractionError(name, "missing header field(s): " + ", ".join(_title_key(k) for k in missing))
    header = DocumentHeader(extra=extra, **values)
    _check_header(header, name)
    return header, lines[i:]


def _is_header_start(line: str) -> bool:
    match = _HEADER_LINE.match(line.strip())
    return bool(match and match.group(1).lower() in HEADER_KEYS)


def _header_complete(values: dict[str, str]) -> bool:
    return all(values.get(f) for f in HEADER_KEYS.values())


def _title_key(key: str) -> str:
    return "-".join(part.capitalize() for part in key.split("-"))


def _check_header(header: DocumentHeader, name: str) -> None:
    if not _SLUG.match(header.document_id):
        raise ExtractionError(name, "Document-Id must be a lowercase slug (a-z, 0-9, '.', '_', '-')")
    try:
        date.fromisoformat(header.effective_date)
    except ValueError:
        raise ExtractionError(name, "Effective-Date must be an ISO date (YYYY-MM-DD)") from None
    if header.doc_type not in DOC_TYPES:
        raise ExtractionError(name, f"Doc-Type must be one of {', '.join(DOC_TYPES)}")


# -- body -----------------------------------------------------------------------------------------
def to_paragraphs(lines: Iterable[str], markdown: bool = False) -> list[str]:
    """Blank-line separated blocks -> paragraphs.  Wrapped lines are joined with spaces; list items
    keep their own line; in Markdown a `#` heading is a block of its own whatever surrounds it."""
    paragraphs: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            paragraphs.append(_join_block(current))
            current.clear()

    for raw in lines:
        line = raw.strip()
        if markdown:
            if _MD_TABLE_RULE.match(line) and set(line) <= set("|-: "):
                continue
            if _MD_HEADING.match(line):
                flush()
                paragraphs.append(_MD_HEADING.sub("", line).strip())
                continue
            line = _MD_EMPHASIS.sub(r"\2", line)
        if not line:
            flush()
        else:
            current.append(line)
    flush()
    return [p for p in paragraphs if p]


def _join_block(lines: list[str]) -> str:
    out = lines[0]
    for line in lines[1:]:
        joiner = "\n" if _BULLET.match(line) or line.startswith("|") else " "
        out += joiner + line
    return re.sub(r"[ \t]+", " ", out)


# -- per-format line readers -------------------------------------------------------------------------
def _text_lines(data: bytes) -> list[str]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    return text.splitlines()


def _pdf_lines(data: bytes) -> list[str]:
    import io

    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    lines: list[str] = []
    for page in reader.pages:
        lines += (page.extract_text() or "").splitlines()
        lines.append("")  # a page break ends a paragraph only if the writer says so; harmless otherwise
    if not any(line.strip() for line in lines):
        raise ValueError("no text layer")
    return _rejoin_page_breaks(lines)


def _rejoin_page_breaks(lines: list[str]) -> list[str]:
    # A paragraph that runs over a page break continues on the next page: drop the page's blank line
    # when the text before it does not end a sentence and the next page starts in lower case.
    out: list[str] = []
    for i, line in enumerate(lines):
        if line == "" and out and i + 1 < len(lines):
            prev, nxt = out[-1].rstrip(), lines[i + 1].lstrip()
            if prev and nxt and prev[-1] not in ".:;!?" and nxt[:1].islower():
                continue
        out.append(line)
    return out


def _docx_lines(data: bytes) -> list[str]:
    import io

    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(data))
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                lines.append(" | ".join(_unique_cells(cell.text.strip() for cell in row.cells)))
                lines.append("")
        else:
            lines += [block.text, ""]
    return lines


def _unique_cells(cells: Iterable[str]) -> list[str]:
    out: list[str] = []
    for cell in cells:  # merged cells repeat their text in python-docx
        if not out or out[-1] != cell:
            out.append(cell)
    return out


class _HtmlLines(HTMLParser):
    """Block-level text of an HTML page, one block per line with blank lines between blocks."""

    BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "div", "section", "article", "blockquote",
              "tr", "dt", "dd", "br", "table", "ul", "ol", "header", "footer", "main"}  # fmt: skip
    SKIP = {"head", "script", "style", "nav", "template"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._buf: list[str] = []
        self._skip = 0
        self._pre = 0
        self._cells: list[str] | None = None

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        self._buf.clear()
        if text:
            self.lines += [text, ""]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "pre":
            self._flush()
            self._pre += 1
        elif tag in ("td", "th") and self._cells is not None:
            self._buf.clear()
        elif tag == "tr":
            self._flush()
            self._cells = []
        elif tag in self.BLOCKS:
            self._flush()
            if tag == "li":
                self._buf.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
            self.lines += [line.strip() for line in "".join(self._buf).splitlines()] + [""]
            self._buf.clear()
        elif tag in ("td", "th") and self._cells is not None:
            self._cells.append(" ".join("".join(self._buf).split()))
            self._buf.clear()
        elif tag == "tr" and self._cells is not None:
            row = " | ".join(c for c in self._cells if c)
            if row:
                self.lines += [row, ""]
            self._cells = None
        elif tag in self.BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def _html_lines(data: bytes) -> list[str]:
    parser = _HtmlLines()
    parser.feed(data.decode("utf-8", errors="replace"))
    parser.close()
    return parser.lines


_LINE_READERS = {
    "txt": _text_lines,
    "md": _text_lines,
    "pdf": _pdf_lines,
    "docx": _docx_lines,
    "html": _html_lines,
}
