"""careflow's sandbox EHR: a FHIR R4 REST server (FastAPI over Postgres JSONB, careflow/fhir/store.py).

`build_router()` returns an APIRouter that takes its pool from `request.app.state.pool`; careflow's API
mounts it at `/fhir/r4` (starters/api/fhir.py).  Interactions:

    GET    /metadata                       CapabilityStatement
    GET    /[type]/[id]                    read (404 unknown, 410 deleted)
    GET    /[type]/[id]/_history/[vid]     vread
    GET    /[type]/[id]/_history           instance history (Bundle type history, paged)
    GET    /[type]?params  POST /[type]/_search   search (searchset Bundle with self/next/previous links)
    POST   /[type]                         create; with If-None-Exist: conditional create (200 on a match)
    PUT    /[type]/[id]  PUT /[type]?criteria    update (or create); If-Match: W/"n" -> 412 on mismatch
    DELETE /[type]/[id]  DELETE /[type]?criteria delete
    POST   /                               transaction (all-or-nothing) or batch Bundle

Every error is an OperationOutcome saying what is wrong and where (FHIRPath), never echoing values.
`Prefer: return=minimal|representation|OperationOutcome` and `Prefer: handling=strict|lenient` are
honoured; unknown search parameters are refused unless lenient (see search.py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response

from careflow.fhir import search
from careflow.fhir.outcome import Issue, operation_outcome
from careflow.fhir.resources import (
    FHIR_JSON,
    FHIR_VERSION,
    ID_RE,
    all_resource_types,
    dumps,
    is_resource_type,
    loads,
)
from careflow.fhir.store import (
    Entry,
    FhirRequestError,
    FhirStore,
    Result,
    Stored,
    bundle_entries,
    etag,
    instant,
    parse_criteria,
    parse_version,
    request_error,
    validate_body,
)
from careflow.security.logging import get_logger

_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")

Handler = Callable[..., Awaitable[Response]]
log = get_logger("careflow.fhir.server")


# -- responses ------------------------------------------------------------------------------------
def fhir_response(status: int, body: str | None = None, headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=body.encode() if body is not None else None,
        status_code=status,
        media_type=FHIR_JSON if body is not None else None,
        headers=headers,
    )


def outcome_response(status: int, issues: list[Issue]) -> Response:
    return fhir_response(status, dumps(operation_outcome(issues)))


def fhir_errors(handler: Handler) -> Handler:
    """Every refusal becomes an OperationOutcome with the right status."""

    @functools.wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except FhirRequestError as exc:
            return outcome_response(exc.status, exc.issues)
        except search.SearchError as exc:
            return outcome_response(400, exc.issues)
        except Exception as exc:
            # The type only: driver messages can quote the values of the failing row.
            log.error("fhir request failed", error_type=type(exc).__name__, handler=handler.__name__)
            return outcome_response(500, [Issue("exception", "internal error; the server log has its type")])

    return wrapped


def _version_headers(stored: Stored, base: str, *, location: bool = False) -> dict[str, str]:
    headers = {
        "ETag": etag(stored.version_id),
        "Last-Modified": format_datetime(stored.last_updated, usegmt=True),
    }
    if location:
        headers["Location"] = f"{base}/{stored.location}"
    return headers


# -- request helpers ------------------------------------------------------------------------------
def _store(request: Request) -> FhirStore:
    return FhirStore(request.app.state.pool)


def _base(request: Request, tail_segments: int) -> str:
    """The FHIR base URL, from the request URL minus its last `tail_segments` path segments."""
    url = str(request.url.replace(query=None, fragment=None)).rstrip("/")
    for _ in range(tail_segments):
        url = url.rsplit("/", 1)[0]
    return url


def _prefer(request: Request) -> dict[str, str]:
    """RFC 7240: `Prefer: return=minimal, handling=lenient` (preferences comma-separated)."""
    out = {}
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            key, _, value = preference.split(";", 1)[0].strip().partition("=")
            if key:
                out[key.lower()] = value.strip().strip('"')
    return out


def _check_type(rtype: str) -> None:
    if not is_resource_type(rtype):
        raise request_error(404, "not-supported", "not an R4 resource type", "type")


def _check_id(rid: str) -> None:
    if rid.startswith("_"):
        raise request_error(404, "not-supported", f"[type]/{rid} is not supported by this server")
    if not ID_RE.match(rid):
        raise request_error(400, "invalid", "id must be 1-64 characters [A-Za-z0-9-.]", "id")


async def _json_body(request: Request) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in _JSON_TYPES:
        raise request_error(415, "not-supported", "send application/fhir+json")
    body = await request.body()  # its size and depth were checked before (security/request_limits.py)
    try:
        return loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        # JSONDecodeError's message names a position, never the content.
        where = f"line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise request_error(400, "structure", f"the body is not valid JSON {where}".strip()) from None


def _written(request: Request, result: Result, base: str, *, created_status: int = 201) -> Response:
    stored = result.stored
    assert stored is not None
    headers = _version_headers(stored, base, location=result.status == created_status)
    ret = _prefer(request).get("return", "representation")
    if ret == "minimal":
        return fhir_response(result.status, None, headers)
    if ret == "OperationOutcome":
        info = Issue(
            "informational", f"{stored.location} {HTTPStatus(result.status).phrase}", severity="information"
        )
        return fhir_response(result.status, dumps(operation_outcome([info])), headers)
    return fhir_response(result.status, stored.doc, headers)


# -- Bundles --------------------------------------------------------------------------------------
def _bundle_head(kind: str, total: int | None, links: list[tuple[str, str]]) -> dict[str, Any]:
    head: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(datetime.now(UTC))},
        "type": kind,
    }
    if total is not None:
        head["total"] = total
    if links:
        head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    return head


def _assemble(head: dict[str, Any], entries: list[str]) -> str:
    """A Bundle from its head and pre-serialised entries (stored JSON is spliced in, never re-parsed)."""
    return dumps(head)[:-1] + ',"entry":[' + ",".join(entries) + "]}"


def searchset(base: str, q: search.Query, total: int, rows: list[Stored]) -> str:
    url = f"{base}/{q.rtype}?"
    links = [("self", url + q.link_query(q.offset)), ("first", url + q.link_query(0))]
    if q.offset + len(rows) < total and q.count > 0:
        links.append(("next", url + q.link_query(q.offset + q.count)))
    if q.offset > 0:
        links.append(("previous", url + q.link_query(max(0, q.offset - q.count))))
    entries = [
        '{"fullUrl":'
        + dumps(f"{base}/{s.resource_type}/{s.id}")
        + ',"resource":'
        + str(s.doc)
        + ',"search":{"mode":"match"}}'
        for s in rows
    ]
    return _assemble(_bundle_head("searchset", total, links), entries)


def _response_json(result: Result, base: str) -> dict[str, Any]:
    resp: dict[str, Any] = {"status": f"{result.status} {HTTPStatus(result.status).phrase}"}
    if result.stored is not None:
        resp["location"] = (
            f"{result.stored.resource_type}/{result.stored.id}/_history/{result.stored.version_id}"
        )
        resp["etag"] = etag(result.stored.version_id)
        resp["lastModified"] = instant(result.stored.last_updated)
    if result.outcome:
        resp["outcome"] = operation_outcome(result.outcome)
    return resp


def _bundle_response(kind: str, results: list[Result], base: str, representation: bool) -> str:
    entries = []
    for res in results:
        s = res.stored
        parts = []
        if s is not None:
            parts.append('"fullUrl":' + dumps(f"{base}/{s.resource_type}/{s.id}"))
            if representation and s.doc is not None:
                parts.append('"resource":' + s.doc)
        parts.append('"response":' + dumps(_response_json(res, base)))
        entries.append("{" + ",".join(parts) + "}")
    return _assemble(_bundle_head(f"{kind}-response", None, []), entries)


def _history_bundle(
    base: str, rtype: str, rid: str, total: int, rows: list[Stored], count: int, offset: int
) -> str:
    url = f"{base}/{rtype}/{rid}/_history?_count={count}&_offset="
    links = [("self", f"{url}{offset}")]
    if offset + len(rows) < total:
        links.append(("next", f"{url}{offset + count}"))
    entries = []
    for s in rows:
        status = 204 if s.method == "DELETE" else 201 if s.method == "POST" or s.version_id == 1 else 200
        request = {"method": s.method, "url": f"{rtype}/{rid}" if s.method != "POST" else rtype}
        response = {
            "status": f"{status} {HTTPStatus(status).phrase}",
            "etag": etag(s.version_id),
            "lastModified": instant(s.last_updated),
        }
        parts = ['"fullUrl":' + dumps(f"{base}/{rtype}/{rid}")]
        if s.doc is not None:
            parts.append('"resource":' + s.doc)
        parts += ['"request":' + dumps(request), '"response":' + dumps(response)]
        entries.append("{" + ",".join(parts) + "}")
    return _assemble(_bundle_head("history", total, links), entries)


# -- CapabilityStatement ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _capability_json() -> str:
    resources = []
    for rtype in all_resource_types():
        resources.append(
            {
                "type": rtype,
                "interaction": [
                    {"code": c}
                    for c in (
                        "read",
                        "vread",
                        "update",
                        "delete",
                        "history-instance",
                        "create",
                        "search-type",
                    )
                ],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalUpdate": True,
                "conditionalDelete": "single",
                "searchParam": [{"name": n, "type": t} for n, t in search.supported_params(rtype)],
            }
        )
    return dumps(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2025-01-01",
            "kind": "instance",
            "software": {"name": "careflow sandbox EHR", "version": "0.1.0"},
            "implementation": {"description": "careflow's sandbox FHIR R4 server (Postgres JSONB)"},
            "fhirVersion": FHIR_VERSION,
            "format": ["application/fhir+json", "json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": resources,
                    "interaction": [{"code": "transaction"}, {"code": "batch"}],
                }
            ],
        }
    )


# -- the router -------------------------------------------------------------------------------------
def build_router() -> APIRouter:
    router = APIRouter(tags=["fhir"])

    @router.get("/metadata")
    @fhir_errors
    async def metadata(request: Request) -> Response:
        # The first call imports every R4B model (about two seconds): off the event loop.
        return fhir_response(200, await asyncio.to_thread(_capability_json))

    @router.post("")
    @router.post("/")
    @fhir_errors
    async def transaction(request: Request) -> Response:
        base = _base(request, 0)
        kind, entries = bundle_entries(await _json_body(request))
        store = _store(request)
        results = await (store.write(entries) if kind == "transaction" else store.write_each(entries))
        representation = _prefer(request).get("return") == "representation"
        return fhir_response(200, _bundle_response(kind, results, base, representation))

    @router.get("/{rtype}")
    @fhir_errors
    async def search_get(request: Request, rtype: str) -> Response:
        return await _search(request, rtype, list(request.query_params.multi_items()), 1)

    @router.post("/{rtype}/_search")
    @fhir_errors
    async def search_post(request: Request, rtype: str) -> Response:
        form = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        return await _search(request, rtype, [*request.query_params.multi_items(), *form], 2)

    async def _search(request: Request, rtype: str, items: list[tuple[str, str]], tail: int) -> Response:
        _check_type(rtype)
        lenient = _prefer(request).get("handling") == "lenient"
        q = search.parse_query(rtype, items, lenient=lenient)
        total, rows = await _store(request).search(q)
        return fhir_response(200, searchset(_base(request, tail), q, total, rows))

    @router.post("/{rtype}")
    @fhir_errors
    async def create(request: Request, rtype: str) -> Response:
        _check_type(rtype)
        resource = validate_body(await _json_body(request), "", rtype)
        entry = Entry("POST", rtype, resource=resource)
        if (criteria := request.headers.get("if-none-exist")) is not None:
            entry.if_none_exist = parse_criteria(criteria, "If-None-Exist")
        [result] = await _store(request).write([entry])
        return _written(request, result, _base(request, 1))

    @router.get("/{rtype}/{rid}")
    @fhir_errors
    async def read(request: Request, rtype: str, rid: str) -> Response:
        _check_type(rtype)
        _check_id(rid)
        stored = await _store(request).read(rtype, rid)
        return fhir_response(200, stored.doc, _version_headers(stored, _base(request, 2)))

    @router.put("/{rtype}/{rid}")
    @fhir_errors
    async def update(request: Request, rtype: str, rid: str) -> Response:
        _check_type(rtype)
        _check_id(rid)
        return await _update(request, Entry("PUT", rtype, rid), 2)

    @router.put("/{rtype}")
    @fhir_errors
    async def conditional_update(request: Request, rtype: str) -> Response:
        _check_type(rtype)
        criteria = [(k, v) for k, v in request.query_params.multi_items() if k != "_format"]
        if not criteria:
            raise request_error(400, "invalid", "PUT needs [type]/[id] or [type]?[criteria]")
        return await _update(request, Entry("PUT", rtype, criteria=criteria), 1)

    async def _update(request: Request, entry: Entry, tail: int) -> Response:
        entry.resource = validate_body(await _json_body(request), "", entry.rtype)
        entry.if_match = parse_version(request.headers.get("if-match"), "If-Match")
        [result] = await _store(request).write([entry])
        return _written(request, result, _base(request, tail))

    @router.delete("/{rtype}/{rid}")
    @fhir_errors
    async def delete(request: Request, rtype: str, rid: str) -> Response:
        _check_type(rtype)
        _check_id(rid)
        await _store(request).write([Entry("DELETE", rtype, rid)])
        return fhir_response(204)

    @router.delete("/{rtype}")
    @fhir_errors
    async def conditional_delete(request: Request, rtype: str) -> Response:
        _check_type(rtype)
        criteria = list(request.query_params.multi_items())
        if not criteria:
            raise request_error(400, "invalid", "DELETE needs [type]/[id] or [type]?[criteria]")
        await _store(request).write([Entry("DELETE", rtype, criteria=criteria)])
        return fhir_response(204)

    @router.get("/{rtype}/{rid}/_history")
    @fhir_errors
    async def history(request: Request, rtype: str, rid: str) -> Response:
        _check_type(rtype)
        _check_id(rid)
        params = dict(request.query_params)
        count = (
            min(int(params.get("_count", "50")), search.MAX_COUNT)
            if params.get("_count", "50").isdigit()
            and len(params.get("_count", "50")) <= search.MAX_INT_DIGITS
            else 50
        )
        raw_offset = params.get("_offset", "0")
        if not raw_offset.isdigit() or len(raw_offset) > search.MAX_INT_DIGITS:
            raise request_error(400, "invalid", "_offset must be a non-negative integer below 1e9", "_offset")
        offset = int(raw_offset)
        total, rows = await _store(request).history(rtype, rid, count, offset)
        return fhir_response(200, _history_bundle(_base(request, 3), rtype, rid, total, rows, count, offset))

    @router.get("/{rtype}/{rid}/_history/{vid}")
    @fhir_errors
    async def vread(request: Request, rtype: str, rid: str, vid: str) -> Response:
        _check_type(rtype)
        _check_id(rid)
        if not vid.isdigit() or len(vid) > search.MAX_INT_DIGITS:
            raise request_error(400, "invalid", "a version id is a number below 1e9", "vid")
        stored = await _store(request).vread(rtype, rid, int(vid))
        return fhir_response(200, stored.doc, _version_headers(stored, _base(request, 4)))

    @router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    async def unsupported(request: Request, path: str) -> Response:
        if request.method in ("PATCH", "HEAD", "OPTIONS"):
            return outcome_response(405, [Issue("not-supported", f"{request.method} is not supported here")])
        return outcome_response(404, [Issue("not-supported", "no such FHIR interaction on this server")])

    return router
