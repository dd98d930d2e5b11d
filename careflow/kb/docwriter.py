"""Writers for the starter knowledge base's .docx and .pdf documents.

The source of each binary document is a plain-text file in `careflow/kb/starter_src/` named
`<stem>.docx.txt` or `<stem>.pdf.txt`, in the knowledge-base text format: `Key: value` header lines, a
blank line, then blocks separated by blank lines; a one-line block like `3 Heading` or `3.1 Heading`
is a section heading. `python -m careflow.kb.docwriter` rebuilds `careflow/kb/starter/<stem>.<ext>`.

The PDF writer is hand-written (Helvetica, WinAnsi, one content stream per page) so that no PDF
library is needed; pypdf extracts its text back line by line. Blank lines are written as a single
space so that extractors keep the paragraph break.
"""

from __future__ import annotations

import io
import re
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import docx

KB_DIR = Path(__file__).resolve().parent
SOURCE_DIR = KB_DIR / "starter_src"
STARTER_DIR = KB_DIR / "starter"

_HEADING = re.compile(r"^(\d+(?:\.\d+)*)\s+\S.{0,100}$")


@dataclass(frozen=True)
class Block:
    kind: str  # "heading" | "paragraph"
    text: str
    level: int = 0


def parse_source(text: str) -> tuple[list[str], list[Block]]:
    """Split a source text into its header lines and its body blocks."""
    header_part, _, body = text.strip().partition("\n\n")
    header = [line.strip() for line in header_part.splitlines() if line.strip()]
    blocks: list[Block] = []
    for raw in re.split(r"\n\s*\n", body.strip()):
        para = " ".join(line.strip() for line in raw.splitlines() if line.strip())
        match = _HEADING.match(para)
        if match and "\n" not in raw.strip() and not para.endswith("."):
            blocks.append(Block("heading", para, match.group(1).count(".") + 1))
        elif para:
            blocks.append(Block("paragraph", para))
    return header, blocks


def write_docx(text: str, target: Path) -> None:
    header, blocks = parse_source(text)
    document = docx.Document()
    for line in header:
        document.add_paragraph(line)
    document.add_paragraph("")
    for block in blocks:
        if block.kind == "heading":
            document.add_heading(block.text, level=min(block.level, 3))
        else:
            document.add_paragraph(block.text)
    title = next((line.split(":", 1)[1].strip() for line in header if line.startswith("Title:")), "")
    document.core_properties.title = title
    buffer = io.BytesIO()
    document.save(buffer)
    target.write_bytes(_reproducible_zip(buffer.getvalue()))


def _reproducible_zip(data: bytes) -> bytes:
    """Re-pack with fixed timestamps: the same source gives the same bytes, so the ingestion's
    content hash (of the file bytes) does not change when the documents are rebuilt."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED  # a bare ZipInfo would store uncompressed
            dst.writestr(info, src.read(name))
    return out.getvalue()


def _pdf_escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _pdf_lines(text: str) -> list[tuple[str, str]]:
    """(font, text) per output line; font F1 regular, F2 bold headings."""
    header, blocks = parse_source(text)
    lines: list[tuple[str, str]] = [("F1", line) for line in header] + [("F1", " ")]
    for block in blocks:
        font = "F2" if block.kind == "heading" else "F1"
        lines += [(font, part) for part in textwrap.wrap(block.text, 92)] + [("F1", " ")]
    return lines


def pdf_bytes(text: str, lines_per_page: int = 50) -> bytes:
    """A minimal multi-page PDF 1.4 with the text laid out in 10 pt Helvetica."""
    lines = _pdf_lines(text)
    pages = [lines[i : i + lines_per_page] for i in range(0, len(lines), lines_per_page)]
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",  # the page tree, filled in once the page object numbers are known
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
    ]
    page_ids: list[int] = []
    for page in pages:
        ops = ["BT", "14 TL", "72 740 Td"]
        for font, line in page:
            ops += [f"/{font} 10 Tf", f"({_pdf_escape(line)}) Tj", "T*"]
        ops.append("ET")
        stream = "\n".join(ops).encode("cp1252")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        content_id = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> >>" % content_id
        )
        page_ids.append(len(objects))
    kids = " ".join(f"{i} 0 R" for i in page_ids).encode()
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def write_pdf(text: str, target: Path) -> None:
    target.write_bytes(pdf_bytes(text))


def build_all(source_dir: Path = SOURCE_DIR, target_dir: Path = STARTER_DIR) -> list[Path]:
    """Rebuild every .docx/.pdf starter document from its source text; returns the written paths."""
    written = []
    for source in sorted(source_dir.glob("*.txt")):
        stem, ext = source.name.removesuffix(".txt").rsplit(".", 1)
        target = target_dir / f"{stem}.{ext}"
        text = source.read_text(encoding="utf-8")
        if ext == "docx":
            write_docx(text, target)
        elif ext == "pdf":
            write_pdf(text, target)
        else:
            raise ValueError(f"unsupported target format {ext!r} for {source.name}")
        written.append(target)
    return written


if __name__ == "__main__":
    for path in build_all():
        print(path.relative_to(KB_DIR.parent.parent))
