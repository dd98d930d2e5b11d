"""Search for the sandbox: which parameters each resource type supports, what a write indexes, and how
a query string becomes SQL over the JSONB store (migration 0002_fhir_store.sql).

Where each parameter is evaluated:

- `_id`, `_lastUpdated`, `patient`: columns of `fhir_resources` (`patient_id` is the patient whose
  compartment the resource is in, extracted at write time);
- `identifier`: the `fhir_identifiers` table;
- date parameters (`date`, `birthdate`, `authoredon`, ...): the `fhir_dates` table, one row per value as a
  half-open range [start, end) derived from its precision (`2024-03` is the whole month, a Period is
  its span, an open end is the far future);
- token parameters (`status`, `category`, `code`, ...) and references (`subject`, `encounter`, ...):
  the resource JSONB through `@>` / `@?`, both served by its GIN `jsonb_path_ops` index.

Parameters are offered on a type only where the R4B model has the element, so `Observation?status=`
works and `Organization?status=` is an unknown parameter.  Unknown parameters are an error (400) unless
the request says `Prefer: handling=lenient`: silently ignoring a filter would return more patient data
than was asked for.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Literal
from urllib.parse import urlencode

from careflow.fhir.outcome import Issue
from careflow.fhir.resources import ID_RE, dumps, model_class, split_reference

DEFAULT_COUNT = 50
MAX_COUNT = 1000
FAR_PAST = datetime(1, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)

Kind = Literal["token", "reference", "date"]
TokenShape = Literal["code", "coding", "concept"]

# Token parameters: search name -> element.  Offered where the model has the element; the element's
# type (code, Coding, CodeableConcept, or lists of them) decides how a value matches.
TOKEN_PARAMS: dict[str, str] = {
    "status": "status",
    "intent": "intent",
    "priority": "priority",
    "gender": "gender",
    "category": "category",
    "code": "code",
    "type": "type",
    "class": "class",
    "clinical-status": "clinicalStatus",
    "verification-status": "verificationStatus",
    "business-status": "businessStatus",
}
# Where a token parameter reads another element than its name (R4 search parameter definitions).
TOKEN_OVERRIDES: dict[tuple[str, str], str] = {
    ("MedicationRequest", "code"): "medicationCodeableConcept",
    ("MedicationStatement", "code"): "medicationCodeableConcept",
    ("MedicationAdministration", "code"): "medicationCodeableConcept",
    ("MedicationDispense", "code"): "medicationCodeableConcept",
}
# Reference parameters: search name -> element (single Reference or list of them).
REFERENCE_PARAMS: dict[str, str] = {
    "subject": "subject",
    "encounter": "encounter",
    "requester": "requester",
    "owner": "owner",
    "focus": "focus",
    "performer": "performer",
    "author": "author",
    "organization": "organization",
    "based-on": "basedOn",
    "part-of": "partOf",
    "beneficiary": "beneficiary",
    "general-practitioner": "generalPractitioner",
    "practitioner": "practitioner",
}
# Date parameters per type: search name -> element ("x[x]" is a choice: xDateTime, xPeriod, ...).
DATE_PARAMS: dict[str, dict[str, str]] = {
    "Observation": {"date": "effective[x]"},
    "DiagnosticReport": {"date": "effective[x]"},
    "Encounter": {"date": "period"},
    "Procedure": {"date": "performed[x]"},
    "Condition": {"onset-date": "onset[x]", "recorded-date": "recordedDate"},
    "AllergyIntolerance": {"date": "recordedDate"},
    "DocumentReference": {"date": "date"},
    "Composition": {"date": "date"},
    "Immunization": {"date": "occurrence[x]"},
    "RiskAssessment": {"date": "occurrence[x]"},
    "CarePlan": {"date": "period"},
    "CareTeam": {"date": "period"},
    "EpisodeOfCare": {"date": "period"},
    "Flag": {"date": "period"},
    "Coverage": {"period": "period"},
    "Appointment": {"date": "start"},
    "MedicationRequest": {"authoredon": "authoredOn"},
    "ServiceRequest": {"authored": "authoredOn"},
    "Task": {"authored-on": "authoredOn", "modified": "lastModified"},
    "Claim": {"created": "created"},
    "Communication": {"sent": "sent"},
    "Patient": {"birthdate": "birthDate"},
}
# The element that puts a resource in a patient's compartment (R4 `patient` search parameter), where it
# is not simply `patient` or `subject`.
PATIENT_ELEMENT: dict[str, str] = {
    "Coverage": "beneficiary",
    "Task": "for",
    "Account": "subject",
    "Appointment": "",  # participant.actor: not indexed
    "Group": "",
}
_CHOICE_SUFFIXES = ("DateTime", "Period", "Instant", "Date")
MAX_INT_DIGITS = 9  # _count, _offset, version ids: far below Postgres's integer limits
RESULT_PARAMS = frozenset({"_count", "_offset", "_sort", "_total", "_format", "_pretty"})
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")


class SearchError(Exception):
    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("; ".join(i.location_summary() for i in issues))


def _bad(diagnostics: str, param: str, code: str = "invalid") -> SearchError:
    return SearchError([Issue(code, diagnostics, (param,))])


# -- what a type supports -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamDef:
    name: str
    kind: Kind
    element: str
    shape: TokenShape | None = None  # tokens
    is_list: bool = False  # references
    targets: tuple[str, ...] = ()  # references: allowed target types


def _annotation(rtype: str, element: str) -> str | None:
    cls = model_class(rtype)
    if cls is None:
        return None
    for name, f in cls.model_fields.items():
        if (f.alias or name) == element:
            return str(f.annotation)
    return None


def _targets(rtype: str, element: str) -> tuple[str, ...]:
    cls = model_class(rtype)
    assert cls is not None
    for name, f in cls.model_fields.items():
        if (f.alias or name) == element:
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            return tuple(str(t) for t in extra.get("enum_reference_types", ()) or ())  # type: ignore[union-attr]
    return ()


def patient_element(rtype: str) -> str | None:
    """The element holding the compartment patient of `rtype`, if any."""
    if rtype in PATIENT_ELEMENT:
        return PATIENT_ELEMENT[rtype] or None
    for element in ("patient", "subject"):
        ann = _annotation(rtype, element)
        if ann and "Reference" in ann and "Patient" in (_targets(rtype, element) or ("Patient",)):
            return element
    return None


@cache
def param_defs(rtype: str) -> dict[str, ParamDef]:
    defs: dict[str, ParamDef] = {}
    for name, default in TOKEN_PARAMS.items():
        element = TOKEN_OVERRIDES.get((rtype, name), default)
        ann = _annotation(rtype, element)
        if ann is None:
            continue
        shape: TokenShape = "concept" if "CodeableConcept" in ann else "coding" if "Coding" in ann else "code"
        defs[name] = ParamDef(name, "token", element, shape=shape)
    for name, element in REFERENCE_PARAMS.items():
        ann = _annotation(rtype, element)
        if ann is not None and "Reference" in ann:
            defs[name] = ParamDef(
                name, "reference", element, is_list="List" in ann, targets=_targets(rtype, element)
            )
    for name, element in DATE_PARAMS.get(rtype, {}).items():
        defs[name] = ParamDef(name, "date", element)
    return defs


def supported_params(rtype: str) -> list[tuple[str, str]]:
    """(name, FHIR search param type) pairs for the CapabilityStatement."""
    out = [("_id", "token"), ("_lastUpdated", "date")]
    if _annotation(rtype, "identifier") is not None:
        out.append(("identifier", "token"))
    if patient_element(rtype) and rtype != "Patient":
        out.append(("patient", "reference"))
    out += [(d.name, d.kind) for d in param_defs(rtype).values()]
    return out


# -- FHIR dates as ranges -------------------------------------------------------------------------------
_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def date_range(value: str) -> tuple[datetime, datetime]:
    """The half-open range [start, end) a FHIR date/dateTime/instant stands for, by its precision.
    A value without a time zone is taken as UTC.  Raises ValueError."""
    m = _DATE_RE.match(value.strip())
    if not m:
        raise ValueError("not a FHIR date or dateTime")
    y, mo, d = int(m["y"]), int(m["m"] or 1), int(m["d"] or 1)
    tz = UTC
    if m["tz"] and m["tz"] != "Z":
        sign = 1 if m["tz"][0] == "+" else -1
        hh, mm = m["tz"][1:].split(":")
        tz = UTC if (hh, mm) == ("00", "00") else _offset(sign * (int(hh) * 60 + int(mm)))
    if m["H"] is None:
        start = datetime(y, mo, d, tzinfo=tz)
        if m["m"] is None:
            end = datetime(y + 1, 1, 1, tzinfo=tz) if y < 9999 else FAR_FUTURE
        elif m["d"] is None:
            end = start + timedelta(days=calendar.monthrange(y, mo)[1])
        else:
            end = start + timedelta(days=1)
        return start, end
    frac = m["f"] or ""
    micro = int((frac + "000000")[:6]) if frac else 0
    start = datetime(y, mo, d, int(m["H"]), int(m["M"]), int(m["S"] or 0), micro, tzinfo=tz)
    if m["S"] is None:
        step = timedelta(minutes=1)
    elif not frac:
        step = timedelta(seconds=1)
    else:
        step = timedelta(microseconds=10 ** max(0, 6 - len(frac)))
    return start.astimezone(UTC), (start + step).astimezone(UTC)


def _offset(minutes: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(minutes=minutes))


def _element_ranges(resource: dict[str, Any], element: str) -> list[tuple[datetime, datetime]]:
    if element.endswith("[x]"):
        base = element[:-3]
        candidates = [base + s for s in _CHOICE_SUFFIXES]
    else:
        candidates = [element]
    out: list[tuple[datetime, datetime]] = []
    for key in candidates:
        value = resource.get(key)
        if value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            try:
                if isinstance(v, str):
                    out.append(date_range(v))
                elif isinstance(v, dict) and ("start" in v or "end" in v):  # Period
                    start = date_range(v["start"])[0] if isinstance(v.get("start"), str) else FAR_PAST
                    end = date_range(v["end"])[1] if isinstance(v.get("end"), str) else FAR_FUTURE
                    out.append((start, max(end, start)))
            except (ValueError, OverflowError):
                continue  # validated already; an unparseable corner case is simply not indexed
    return out


# -- what a write indexes ---------------------------------------------------------------------------------
@dataclass
class IndexRows:
    patient_id: str | None
    identifiers: list[tuple[str, str]] = field(default_factory=list)  # (system or "", value)
    dates: list[tuple[str, datetime, datetime]] = field(default_factory=list)  # (param, start, end)


def _reference_id(value: Any, target: str = "Patient") -> str | None:
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        ref = split_reference(value["reference"])
        if ref and ref[0] == target:
            return ref[1]
    return None


def index_rows(resource: dict[str, Any]) -> IndexRows:
    rtype = resource["resourceType"]
    if rtype == "Patient":
        patient_id = resource.get("id")
    else:
        element = patient_element(rtype)
        value = resource.get(element) if element else None
        if isinstance(value, list):
            value = value[0] if value else None
        patient_id = _reference_id(value)
    rows = IndexRows(patient_id=patient_id)
    idents = resource.get("identifier")
    for ident in idents if isinstance(idents, list) else [idents] if isinstance(idents, dict) else []:
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            rows.identifiers.append((str(ident.get("system") or ""), ident["value"]))
    for name, element in DATE_PARAMS.get(rtype, {}).items():
        rows.dates += [(name, s, e) for s, e in _element_ranges(resource, element)]
    return rows


# -- parsing a query --------------------------------------------------------------------------------------
@dataclass
class Query:
    rtype: str
    where: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0
    echo: list[tuple[str, str]] = field(default_factory=list)  # the parameters applied (self/next links)

    def __post_init__(self) -> None:
        if not self.args:
            self.args.append(self.rtype)  # $1, the resource type

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def link_query(self, offset: int) -> str:
        return urlencode([*self.echo, ("_count", str(self.count)), ("_offset", str(offset))])


def _split_values(raw: str) -> list[str]:
    """Comma-separated OR values; `\\,` is a literal comma."""
    parts = re.split(r"(?<!\\),", raw)
    return [p.replace("\\,", ",") for p in parts if p != ""]


def _token(raw: str) -> tuple[str | None, str | None]:
    """`system|code` -> (system, code), `code` -> (None, code), `|code` -> ("", code),
    `system|` -> (system, None)."""
    if "|" in raw:
        system, code = raw.split("|", 1)
        return system, (code or None)
    return None, raw


def _jsonpath_str(value: str) -> str:
    return dumps(value)  # a JSON string literal is a valid jsonpath string literal


def _token_condition(q: Query, d: ParamDef, values: list[str]) -> str:
    if d.shape == "code":
        alts = []
        for raw in values:
            _, code = _token(raw)
            if code is None:
                raise _bad(f"{d.name}: a code is required", d.name)
            alts.append(f"r.resource @> {q.arg(dumps({d.element: code}))}::jsonb")
        return "(" + " OR ".join(alts) + ")"
    filters = []
    for raw in values:
        system, code = _token(raw)
        terms = []
        if system == "":
            terms.append("!exists(@.system)")
        elif system is not None:
            terms.append(f"@.system == {_jsonpath_str(system)}")
        if code is not None:
            terms.append(f"@.code == {_jsonpath_str(code)}")
        if not terms:
            raise _bad(f"{d.name}: empty token", d.name)
        filters.append("(" + " && ".join(terms) + ")")
    target = f"$.{_jsonpath_key(d.element)}" + (".coding" if d.shape == "concept" else "")
    path = f"{target} ? ({' || '.join(filters)})"
    return f"r.resource @? {q.arg(path)}::jsonpath"


def _jsonpath_key(element: str) -> str:
    return element if re.match(r"^[A-Za-z]\w*$", element) else _jsonpath_str(element)


def _reference_condition(q: Query, d: ParamDef, values: list[str]) -> str:
    alts = []
    for raw in values:
        if "/" in raw:
            ref = split_reference(raw)
            if ref is None:
                raise _bad(f"{d.name}: expected [type]/[id]", d.name)
            refs = [f"{ref[0]}/{ref[1]}"]
        else:
            if not ID_RE.match(raw):
                raise _bad(f"{d.name}: not a valid id", d.name)
            types = [t for t in d.targets if t != "Resource"] or ["Patient"]
            refs = [f"{t}/{raw}" for t in types]
        for ref_s in refs:
            shape: Any = [{"reference": ref_s}] if d.is_list else {"reference": ref_s}
            alts.append(f"r.resource @> {q.arg(dumps({d.element: shape}))}::jsonb")
    return "(" + " OR ".join(alts) + ")"


def _date_value(name: str, raw: str) -> tuple[str, datetime, datetime]:
    prefix = raw[:2] if raw[:2] in PREFIXES else "eq"
    body = raw[2:] if raw[:2] in PREFIXES else raw
    try:
        start, end = date_range(body)
    except (ValueError, OverflowError):
        raise _bad(f"{name}: expected [prefix]YYYY[-MM[-DD[Thh:mm[:ss][zone]]]]", name) from None
    return prefix, start, end


# Target range [ts, te) against search range [ps, pe) (FHIR R4 search, "date" prefixes).
_RANGE_SQL = {
    "eq": "({ts} >= {ps} AND {te} <= {pe})",
    "ne": "NOT ({ts} >= {ps} AND {te} <= {pe})",
    "gt": "({te} > {pe})",
    "lt": "({ts} < {ps})",
    "ge": "({ts} >= {ps} OR {te} > {pe})",
    "le": "({ts} < {ps} OR {te} <= {pe})",
    "sa": "({ts} >= {pe})",
    "eb": "({te} <= {ps})",
}


def _date_condition(q: Query, name: str, values: list[str], ts: str, te: str) -> str:
    alts = []
    for raw in values:
        prefix, start, end = _date_value(name, raw)
        template = _RANGE_SQL[prefix]
        ps = q.arg(start) if "{ps}" in template else ""
        pe = q.arg(end) if "{pe}" in template else ""
        alts.append(template.format(ts=ts, te=te, ps=ps, pe=pe))
    return "(" + " OR ".join(alts) + ")"


def _identifier_condition(q: Query, values: list[str]) -> str:
    alts = []
    for raw in values:
        system, value = _token(raw)
        terms = []
        if system is not None:
            terms.append(f"i.system = {q.arg(system)}")
        if value is not None:
            terms.append(f"i.value = {q.arg(value)}")
        if not terms:
            raise _bad("identifier: empty token", "identifier")
        alts.append("(" + " AND ".join(terms) + ")")
    return (
        "EXISTS (SELECT 1 FROM fhir_identifiers i WHERE i.resource_type = r.resource_type"  # noqa: S608
        f" AND i.id = r.id AND ({' OR '.join(alts)}))"
    )


def _ids(name: str, values: list[str]) -> list[str]:
    out = []
    for raw in values:
        ref = split_reference(raw) if "/" in raw else None
        rid = ref[1] if ref else raw
        if not ID_RE.match(rid):
            raise _bad(f"{name}: not a valid id", name)
        out.append(rid)
    return out


def parse_query(
    rtype: str, items: list[tuple[str, str]], *, lenient: bool = False, criteria_only: bool = False
) -> Query:
    """Turn query-string items into a Query; raises SearchError naming the bad parameter."""
    q = Query(rtype)
    defs = param_defs(rtype)
    for key, raw in items:
        name, _, modifier = key.partition(":")
        if name in RESULT_PARAMS and not criteria_only:
            _result_param(q, name, raw)
            continue
        if raw == "":
            continue
        values = _split_values(raw)
        negate = False
        if modifier:
            d0 = defs.get(name)
            if modifier == "not" and (d0 is not None and d0.kind == "token"):
                negate = True
            else:
                if lenient:
                    continue
                raise _bad(f"modifier :{modifier} is not supported on {name}", key, "not-supported")
        cond: str | None
        if name == "_id":
            cond = f"r.id = ANY({q.arg(_ids(name, values))}::text[])"
        elif name == "_lastUpdated":
            cond = _date_condition(
                q, name, values, "r.last_updated", "r.last_updated + interval '1 microsecond'"
            )
        elif name == "identifier" and _annotation(rtype, "identifier") is not None:
            cond = _identifier_condition(q, values)
        elif name == "patient" and rtype != "Patient" and patient_element(rtype):
            cond = f"r.patient_id = ANY({q.arg(_ids(name, values))}::text[])"
        elif name in defs:
            d = defs[name]
            if d.kind == "token":
                cond = _token_condition(q, d, values)
            elif d.kind == "reference":
                cond = _reference_condition(q, d, values)
            else:
                inner = _date_condition(q, name, values, "d.start_at", "d.end_at")
                cond = (
                    "EXISTS (SELECT 1 FROM fhir_dates d WHERE d.resource_type = r.resource_type"  # noqa: S608
                    f" AND d.id = r.id AND d.param = {q.arg(name)} AND {inner})"
                )
        else:
            if lenient:
                continue
            raise _bad(f"unknown search parameter {name!r} for {rtype}", name, "not-supported")
        q.where.append(f"NOT {cond}" if negate else cond)
        q.echo.append((key, raw))
    if not q.order:
        q.order = ["r.last_updated DESC"]
    return q


def _result_param(q: Query, name: str, raw: str) -> None:
    if name in ("_format", "_pretty", "_total"):
        return
    if name in ("_count", "_offset"):
        if not raw.isdigit() or len(raw) > MAX_INT_DIGITS:
            raise _bad(f"{name} must be an integer from 0 to {10**MAX_INT_DIGITS - 1}", name)
        if name == "_count":
            q.count = min(int(raw), MAX_COUNT)
        else:
            q.offset = int(raw)
        return
    # _sort
    order = []
    defs = param_defs(q.rtype)
    for key in _split_values(raw):
        desc = key.startswith("-")
        name_ = key.lstrip("-")
        if name_ == "_lastUpdated":
            expr = "r.last_updated"
        elif name_ == "_id":
            expr = "r.id"
        elif name_ in defs and defs[name_].kind == "date":
            expr = (
                "(SELECT min(d.start_at) FROM fhir_dates d WHERE d.resource_type = r.resource_type"  # noqa: S608
                f" AND d.id = r.id AND d.param = {q.arg(name_)})"
            )
        else:
            raise _bad(f"cannot sort {q.rtype} by {name_!r}", "_sort", "not-supported")
        order.append(f"{expr} {'DESC NULLS LAST' if desc else 'ASC NULLS LAST'}")
    q.order = order
    q.echo.append(("_sort", raw))
