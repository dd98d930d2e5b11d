"""How careflow names what was wrong with invalid input: field paths only, never the values (which may be
PHI or whatever an attacker sent)."""

from __future__ import annotations

import re

from pydantic import ValidationError


def error_fields(exc: ValidationError) -> str:
    """`a.b, c` for the fields pydantic rejected, each named once, in order."""
    paths = (".".join(map(str, e["loc"])) or "(root)" for e in exc.errors())
    return ", ".join(dict.fromkeys(paths))


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # unrolled: linear, fast
_BRACKETS = re.compile(rb"[\[\]{}]")
# \u0000 as an escape: preceded by an even run of backslashes (none included)
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def json_body_problem(body: bytes, max_depth: int) -> str | None:
    """Why a JSON request body is refused before anyone parses it, or None: NUL characters (no
    text column, FHIR string or prompt may hold one) and nesting deeper than `max_depth` (Python's
    parser recurses: 100k `[` is a RecursionError).  Linear time, no recursion."""
    if b"\x00" in body or (b"\\u0000" in body and _NUL_ESCAPE.search(body)):
        return "NUL characters (\\u0000) are not accepted"
    depth = 0
    for m in _BRACKETS.finditer(_JSON_STRING.sub(b'""', body)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return f"JSON nested deeper than {max_depth} levels"
        else:
            depth -= 1
    return None
