"""How careflow names what was wrong with invalid input: field paths only, never the values (which may be
PHI or whatever an attacker sent)."""

from __future__ import annotations

from pydantic import ValidationError


def error_fields(exc: ValidationError) -> str:
    """`a.b, c` for the fields pydantic rejected, each named once, in order."""
    paths = (".".join(map(str, e["loc"])) or "(root)" for e in exc.errors())
    return ", ".join(dict.fromkeys(paths))
