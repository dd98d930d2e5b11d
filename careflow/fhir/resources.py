"""FHIR R4 resources as plain JSON dicts, validated with fhir.resources' R4B models.

fhir.resources 8.x validates against R5 by default; real R4 data (Epic, Cerner, US Core) fails that, so
everything here goes through the R4B models (FHIR 4.3, wire-compatible with R4 for the resources careflow
uses).  The models only *check* a resource: the dict that was sent is what gets stored and returned, so
profiles, extensions, `_element` primitive extensions and contained resources round-trip unchanged.

JSON decimals keep their precision (`1.50` stays `1.50`, which FHIR treats as significant): `loads`
parses them as Decimal and `dumps` writes them back digit for digit.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from pydantic import ValidationError

from careflow.fhir.outcome import Issue

FHIR_VERSION = "4.0.1"
FHIR_JSON = "application/fhir+json"

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE_NAME_RE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_ABSTRACT = frozenset({"Resource", "DomainResource"})


# -- JSON with exact decimals -----------------------------------------------------------------------
_DECIMAL_MARK = re.compile(r'"\\u0000([-+0-9.eE]+)\\u0000"')


def _mark_decimal(value: Any) -> str:
    if isinstance(value, Decimal):
        # NUL cannot occur in FHIR strings (nor in jsonb), so the marker is unambiguous.
        return f"\x00{value}\x00"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def loads(text: str | bytes) -> Any:
    return json.loads(text, parse_float=Decimal)


def dumps(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_mark_decimal)
    return _DECIMAL_MARK.sub(r"\1", text) if "\\u0000" in text else text


# -- resource types -----------------------------------------------------------------------------------
@cache
def model_class(resource_type: str) -> type[FHIRAbstractModel] | None:
    """The R4B model of a concrete resource type, or None for anything else (datatypes included)."""
    if not _TYPE_NAME_RE.match(resource_type) or resource_type in _ABSTRACT:
        return None
    try:
        cls = get_fhir_model_class(resource_type)
    except ValueError:
        return None
    return cls if issubclass(cls, Resource) else None


def is_resource_type(name: str) -> bool:
    return model_class(name) is not None


@lru_cache(maxsize=1)
def all_resource_types() -> tuple[str, ...]:
    """Every concrete R4B resource type (imports every model once: about two seconds)."""
    from fhir.resources.R4B import fhirtypes

    names = (n.removesuffix("Type") for n in dir(fhirtypes) if n.endswith("Type") and n[0].isupper())
    return tuple(sorted(n for n in names if model_class(n) is not None))


# -- validation ---------------------------------------------------------------------------------------
class InvalidResource(Exception):
    """A resource failed validation; `issues` say what is wrong and where (FHIRPath expressions)."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("; ".join(i.location_summary() for i in issues))


def _fhirpath(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _issue_code(error_type: str) -> str:
    if error_type in ("missing", "model_field_validation.missing"):
        return "required"
    if error_type == "extra_forbidden":
        return "structure"
    return "value"


def _message(err: Any) -> str:
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    msg = " ".join(msg.split())
    value = err.get("input")
    # Never echo the offending value: it may be PHI, and the message ends up in logs and histories.
    if isinstance(value, str) and len(value) >= 3 and value in msg:
        msg = msg.replace(value, "[value]")
    return msg


def validate_resource(resource: Any, *, where: str | None = None, expected_type: str | None = None) -> str:
    """Check `resource` against its R4B model; return its type or raise InvalidResource.

    `where` is the FHIRPath of the resource inside a larger document (e.g. `Bundle.entry[3].resource`);
    issue expressions are prefixed with it.
    """
    if not isinstance(resource, dict):
        raise InvalidResource([Issue("structure", "a resource must be a JSON object", (where or "",))])
    rtype = resource.get("resourceType")
    base = where or (rtype if isinstance(rtype, str) else "")
    if not isinstance(rtype, str) or model_class(rtype) is None:
        raise InvalidResource(
            [
                Issue(
                    "structure",
                    "resourceType is missing or not an R4 resource type",
                    (base or "resourceType",),
                )
            ]
        )
    if expected_type is not None and rtype != expected_type:
        raise InvalidResource(
            [Issue("invalid", f"expected a {expected_type} resource, got {rtype}", (f"{base}.resourceType",))]
        )
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not ID_RE.match(rid)):
        raise InvalidResource([Issue("value", "id must be 1-64 characters [A-Za-z0-9-.]", (f"{base}.id",))])
    cls = model_class(rtype)
    assert cls is not None
    try:
        cls.model_validate(resource)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc = tuple(p for p in err.get("loc", ()) if p != "__root__")
            issues.append(
                Issue(_issue_code(str(err.get("type", ""))), _message(err), (_fhirpath(base, loc),))
            )
        raise InvalidResource(issues) from None
    return rtype


# -- references ---------------------------------------------------------------------------------------
def split_reference(reference: str) -> tuple[str, str] | None:
    """`Patient/123`, `Patient/123/_history/2` or an absolute URL ending so -> ("Patient", "123")."""
    parts = reference.split("?", 1)[0].rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and is_resource_type(parts[-2]) and ID_RE.match(parts[-1]):
        return parts[-2], parts[-1]
    return None
